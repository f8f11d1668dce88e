/* The commands XDP serves (get/gets, the storage commands, delete, touch,
 * incr/decr) and the dispatch from the command line: global functions,
 * verified once each, returning an ACT_*.
 * Part of bpf/kv.bpf.c, which includes it after its maps, its scratch
 * (struct scratch, MASK, STAT_INC, get_scratch) and its configuration:
 * not a header of its own. */
#ifndef XDPLAB_KV_COMMANDS_H
#define XDPLAB_KV_COMMANDS_H

/* ---- commands (global: verified once) ---- */

/* get/gets: one VALUE block per hit, then END. The item's fields go through
 * the scratch map (flags, nbytes, num) so loop exits do not fork the state.
 *
 * The item is read without its stripe lock, between two reads of its
 * sequence count (item.h): a GET hit writes nothing that another CPU
 * reads or writes. 0 when the key was answered (hit, miss or expired), -1
 * for the slow path, GET_TORN when a writer changed the item meanwhile (or
 * was changing it): nothing was kept, and the caller may try again. */
#define GET_TORN 1

__noinline int get_one(__u32 slot, __u32 with_cas)
{
	struct scratch *s = get_scratch(slot);
	struct kv_val *v;
	__u64 now, h;
	__u32 o, seq;
	int hit = 0, slow = 0, expired = 0;

	if (!s)
		return -1;
	now = now_ns();
	h = RD(s->hash);
	o = RD(s->resp_len);
	if (o > REQ_MAX - 600)
		return -1;
	v = bpf_map_lookup_elem(&kv, &h);
	if (!v)
		goto miss;
	seq = RD(v->seq);
	BARRIER();
	if (seq & 1)
		return GET_TORN;
	if (v->slow && key_eq(s, v)) {
		slow = 1;
	} else if (is_live(s, v, now)) {
		/* The whole VALUE block is written straight from the item: no
		 * copy of it to stage. resp_len moves only once the count
		 * says the copy holds. */
		hit = 1;
		WR(s->nbytes, v->len > val_cap ? val_cap : v->len);
		PUT(s, &o, "VALUE ");
		for (__u32 i = 0; i < KV_KEY_SLOT / 8; i++) {
			if (i * 8 >= RD(s->klen))
				break;
			CP8(&s->resp[(o + i * 8) & MASK], &s->key[i * 8]);
		}
		o += RD(s->klen);
		PUT(s, &o, " ");
		put_u64(s, &o, v->flags);
		PUT(s, &o, " ");
		put_u64(s, &o, RD(s->nbytes));
		if (with_cas) {
			PUT(s, &o, " ");
			put_u64(s, &o, v->cas);
		}
		PUT(s, &o, "\r\n");
		for (__u32 i = 0; i < KV_VAL_MAX / 8 + 1; i++) {
			__u32 d = i * 8;

			if (d >= RD(s->nbytes) || d > val_cap)
				break;
			CP8(&s->resp[(o + d) & MASK], &v->data[d]);
		}
		o += RD(s->nbytes);
		PUT(s, &o, "\r\n");
	} else if (v->cas && key_eq(s, v)) {
		expired = 1;
	}
	BARRIER();
	if (RD(v->seq) != seq)
		return GET_TORN;
	if (slow || (hit && !still_mapped(h, v)))
		return -1;
	if (hit) {
		WR(s->resp_len, o);
		STAT_INC(get_hits);
		return 0;
	}
	if (expired)
		STAT_INC(get_expired);
miss:
	STAT_INC(get_misses);
	return 0;
}

__noinline int do_get(__u32 slot, __u32 with_cas)
{
	struct scratch *s = get_scratch(slot);
	__u32 k, o;
	int n;

	if (!s)
		return ACT_PASS;
	/* Nothing may follow the get line in the datagram: memcached runs it too. */
	if (RD(s->data_start) != RD(s->req_len))
		return ACT_PASS;
	WR(s->resp_len, 0);
	for (k = 0; k < GET_KEYS_MAX; k++) {
		if (next_tok(slot) == 0)
			break;
		if (load_key(slot) < 0)
			return ACT_PASS;
		STAT_INC(cmd_get);
		/* Once more if a writer got in the way, then the slow path,
		 * which reads under the lock. */
		n = get_one(slot, with_cas);
		if (n == GET_TORN)
			n = get_one(slot, with_cas);
		if (n)
			return ACT_PASS;
	}
	/* A loop that ran out of keys must find the line's end; one that
	 * found it needs no second look (each next_tok is a call). */
	if (k == 0 || (k == GET_KEYS_MAX && next_tok(slot) != 0))
		return ACT_PASS;
	o = RD(s->resp_len);
	PUT(s, &o, "END\r\n");
	if (o > reply_max)
		return ACT_PASS;
	WR(s->resp_len, o);
	return ACT_TX;
}

__noinline int do_store(__u32 slot, __u32 cmd)
{
	struct scratch *s = get_scratch(slot);
	struct kv_val *v;
	struct stripe *lk;
	__u64 now, h, cas, exp;
	int res, attempt;

	if (!s)
		return ACT_PASS;
	now = now_ns();
	if (parse_storage(slot, s, cmd) < 0)
		return ACT_PASS;
	STAT_INC(cmd_set);
	h = RD(s->hash);
	exp = abs_exptime(RD(s->exptime), now / NSEC);
	lk = stripe_of(h);
	if (!lk)
		return ACT_PASS;
	/* One attempt: an insert that races with another one is rare and the
	 * slow path resolves it (verifying a retry would cost as much again). */
	for (attempt = 0; attempt < 1; attempt++) {
		v = bpf_map_lookup_elem(&kv, &h);
		if (v) {
			__u32 n = RD(s->nbytes);
			int live, pass = 0;

			cas = new_cas(s, slot);
			res = R_STORED;
			bpf_spin_lock(&lk->lock);
			/* Every outcome counts as a write (item.h): one pair of
			 * bumps, not one per branch that writes. */
			seq_begin(v);
			live = is_live(s, v, now);
			if (v->slow && key_eq(s, v)) {
				pass = 1;
			} else if (cmd == CMD_ADD && live) {
				res = R_NOT_STORED;
			} else if ((cmd == CMD_REPLACE || cmd == CMD_APPEND || cmd == CMD_PREPEND) && !live) {
				res = R_NOT_STORED;
			} else if (cmd == CMD_CAS && !live) {
				res = R_NOT_FOUND;
			} else if (cmd == CMD_CAS && v->cas != RD(s->cas_in)) {
				res = R_EXISTS;
			} else if (cmd == CMD_APPEND || cmd == CMD_PREPEND) {
				__u32 old = v->len;

				WR(s->alen, old);
				if (old + n > val_cap || old > KV_VAL_MAX) {
					pass = 1;
				} else if (cmd == CMD_APPEND) {
					copy_data_in(s, v, old);
					v->len = old + n;
					v->cas = cas;
				} else {
					/* prepend: old data to tmp, new in front, old after */
					for (__u32 i = 0; i < KV_VAL_MAX / 8 + 1; i++) {
						__u32 d = i * 8;

						if (d >= RD(s->alen) || d > val_cap)
							break;
						CP8(&s->tmp[d & 1023], &v->data[d]);
					}
					copy_data_in(s, v, 0);
					for (__u32 i = 0; i < KV_VAL_MAX / 8 + 1; i++) {
						__u32 d = i * 8;
						__u64 at = (__u64)RD(s->nbytes) + d;

						if (d >= RD(s->alen) || at > val_cap)
							break;
						PIN(at);
						CP8(&v->data[at], &s->tmp[d & 1023]);
					}
					v->len = RD(s->alen) + RD(s->nbytes);
					v->cas = cas;
				}
			} else {
				if (!key_eq(s, v))
					set_key(s, v);
				copy_data_in(s, v, 0);
				v->len = n;
				v->flags = RD(s->flags);
				v->exptime = exp;
				v->slow = 0;
				v->cas = cas;
			}
			seq_end(v);
			bpf_spin_unlock(&lk->lock);
			if (pass)
				return ACT_PASS;
			if (!still_mapped(h, v)) {
				if (res == R_STORED)
					void_item(v);
				return ACT_PASS;
			}
			if (cmd == CMD_CAS && res == R_STORED)
				STAT_INC(cas_hits);
			else if (cmd == CMD_CAS && res == R_EXISTS)
				STAT_INC(cas_badval);
			else if (cmd == CMD_CAS)
				STAT_INC(cas_misses);
			if (res == R_STORED)
				STAT_INC(total_items);
			return reply_line(slot, res);
		}
		/* No entry: only set/add create one. */
		if (cmd != CMD_SET && cmd != CMD_ADD) {
			if (cmd == CMD_CAS) {
				STAT_INC(cas_misses);
				return reply_line(slot, R_NOT_FOUND);
			}
			return reply_line(slot, R_NOT_STORED);
		}
		{
			struct kv_val *nv = (struct kv_val *)s->val;
			int err;

			nv->cas = new_cas(s, slot);
			nv->exptime = exp;
			nv->flags = RD(s->flags);
			nv->len = RD(s->nbytes);
			nv->slow = 0;
			nv->seq = 0;
			set_key(s, nv);
			copy_data_in(s, nv, 0);
			err = bpf_map_update_elem(&kv, &h, nv, BPF_NOEXIST);
			if (err == 0) {
				STAT_INC(inserts);
				STAT_INC(total_items);
				return reply_line(slot, R_STORED);
			}
			return ACT_PASS;
		}
	}
	return ACT_PASS;
}

__noinline int do_delete(__u32 slot)
{
	struct scratch *s = get_scratch(slot);
	struct kv_val *v;
	struct stripe *lk;
	__u64 now, h;
	int res = R_NOT_FOUND, pass = 0;

	if (!s)
		return ACT_PASS;
	now = now_ns();
	if (next_tok(slot) == 0 || load_key(slot) < 0 || tail_noreply(slot, s) < 0)
		return ACT_PASS;
	h = RD(s->hash);
	lk = stripe_of(h);
	v = bpf_map_lookup_elem(&kv, &h);
	if (lk && v) {
		bpf_spin_lock(&lk->lock);
		if (v->slow && key_eq(s, v)) {
			pass = 1;
		} else if (is_live(s, v, now)) {
			/* A tombstone: the entry stays until the LRU takes it, so
			 * writers racing with us never see a freed element. */
			seq_begin(v);
			v->cas = 0;
			v->len = 0;
			seq_end(v);
			res = R_DELETED;
		}
		bpf_spin_unlock(&lk->lock);
		if (!pass && !still_mapped(h, v)) {
			if (res == R_DELETED)
				void_item(v);
			return ACT_PASS;
		}
	}
	if (pass)
		return ACT_PASS;
	if (res == R_DELETED)
		STAT_INC(delete_hits);
	else
		STAT_INC(delete_misses);
	return reply_line(slot, res);
}

__noinline int do_touch(__u32 slot)
{
	struct scratch *s = get_scratch(slot);
	struct kv_val *v;
	struct stripe *lk;
	__u64 now, h, exp;
	int res = R_NOT_FOUND, pass = 0;

	if (!s)
		return ACT_PASS;
	now = now_ns();
	if (next_tok(slot) == 0 || load_key(slot) < 0)
		return ACT_PASS;
	if (next_tok(slot) == 0 || tok_exptime(slot, s) < 0)
		return ACT_PASS;
	if (tail_noreply(slot, s) < 0)
		return ACT_PASS;
	STAT_INC(cmd_touch);
	exp = abs_exptime(RD(s->exptime), now / NSEC);
	h = RD(s->hash);
	lk = stripe_of(h);
	v = bpf_map_lookup_elem(&kv, &h);
	if (lk && v) {
		bpf_spin_lock(&lk->lock);
		if (v->slow && key_eq(s, v)) {
			pass = 1;
		} else if (is_live(s, v, now)) {
			seq_begin(v);
			v->exptime = exp;
			seq_end(v);
			res = R_TOUCHED;
		}
		bpf_spin_unlock(&lk->lock);
		if (!pass && !still_mapped(h, v)) {
			if (res == R_TOUCHED)
				void_item(v);
			return ACT_PASS;
		}
	}
	if (pass)
		return ACT_PASS;
	if (res == R_TOUCHED)
		STAT_INC(touch_hits);
	else
		STAT_INC(touch_misses);
	return reply_line(slot, res);
}

/* incr/decr: memcached's unsigned 64-bit wrap on incr, floor at 0 on decr; a
 * shorter result is written in place padded with spaces, as memcached does. */
__noinline int do_arith(__u32 slot, __u32 incr)
{
	struct scratch *s = get_scratch(slot);
	struct kv_val *v;
	struct stripe *lk;
	__u64 now, h, delta, cur = 0, cas;
	__u32 o = 0;
	int found = 0, pass = 0;

	if (!s)
		return ACT_PASS;
	now = now_ns();
	if (next_tok(slot) == 0 || load_key(slot) < 0)
		return ACT_PASS;
	if (next_tok(slot) == 0 || tok_u64(slot) < 0)
		return ACT_PASS;
	delta = RD(s->num);
	if (tail_noreply(slot, s) < 0)
		return ACT_PASS;
	h = RD(s->hash);
	lk = stripe_of(h);
	v = bpf_map_lookup_elem(&kv, &h);
	cas = new_cas(s, slot);
	if (lk && v) {
		bpf_spin_lock(&lk->lock);
		if (v->slow && key_eq(s, v)) {
			pass = 1;
		} else if (is_live(s, v, now)) {
			__u32 i, digits = 0;
			int bad = 0, spaces = 0;

			found = 1;
			WR(s->alen, v->len);
			if (RD(s->alen) == 0 || RD(s->alen) > 32)
				bad = 1;
			for (i = 0; i < 32 && !bad; i++) {
				__u8 c;

				if (i >= RD(s->alen))
					break;
				c = v->data[i];
				if (c == ' ') {
					spaces = 1;
				} else if (c >= '0' && c <= '9' && !spaces) {
					if (cur > 1844674407370955161ULL ||
					    (cur == 1844674407370955161ULL && c > '5'))
						bad = 1;
					cur = cur * 10 + (c - '0');
					digits++;
				} else {
					bad = 1;
				}
			}
			WR(s->num, cur);
			if (bad || digits == 0) {
				pass = 1; /* memcached's own rules for odd numbers: the slow path */
			} else {
				cur = RD(s->num);
				if (incr)
					cur += delta;
				else
					cur = cur < delta ? 0 : cur - delta;
				WR(s->num, cur);
				WR(s->nd, ndigits(cur));
				if (!RD(s->noreply) && RD(s->nd) + 2 > RD(s->req_len) + RD(s->room)) {
					pass = 1; /* the reply cannot be sent from here: change nothing */
				} else {
					seq_begin(v);
					PUT_DIGITS(v->data, 31, 0, RD(s->num), RD(s->nd));
					if (RD(s->nd) < RD(s->alen)) {
						for (i = 0; i < 32; i++) {
							if (i >= RD(s->alen))
								break;
							if (i >= RD(s->nd))
								v->data[i] = ' ';
						}
					} else {
						v->len = RD(s->nd);
					}
					v->cas = cas;
					seq_end(v);
				}
			}
		}
		bpf_spin_unlock(&lk->lock);
		if (!pass && !still_mapped(h, v)) {
			if (found)
				void_item(v);
			return ACT_PASS;
		}
	}
	if (pass)
		return ACT_PASS;
	if (incr && found)
		STAT_INC(incr_hits);
	else if (incr)
		STAT_INC(incr_misses);
	else if (found)
		STAT_INC(decr_hits);
	else
		STAT_INC(decr_misses);
	if (!found)
		return reply_line(slot, R_NOT_FOUND);
	if (RD(s->noreply))
		return ACT_DROP;
	put_u64(s, &o, RD(s->num));
	PUT(s, &o, "\r\n");
	WR(s->resp_len, o);
	return ACT_TX;
}


/* Finds the command line and dispatches; returns an ACT_*. */
__noinline int process(__u32 slot)
{
	struct scratch *s = get_scratch(slot);
	__u32 len, i, nl = 0;

	if (!s)
		return ACT_PASS;
	len = RD(s->req_len);
	/* Skip whole words holding neither '\n' nor NUL, then look into the word
	 * that holds one (or the payload's end). */
	for (i = 0; i < PAYLOAD_MAX / 8; i++) {
		__u64 w = LD8(&s->req[i * 8]);

		if (i * 8 >= len || HAS_BYTE(w, '\n') || HAS_ZERO(w))
			break;
	}
	WR(s->data_start, i * 8);
	/* The first '\n' or NUL of the word there, if within the payload. */
	{
		__u32 at = RD(s->data_start), k;
		__u64 w = LD8(&s->req[at & MASK]);

		k = first_flagged(HAS_BYTE(w, '\n') | HAS_ZERO(w));
		if (at + k >= RD(s->req_len))
			return ACT_PASS;
		at += k;
		if (s->req[at & MASK] == 0) /* memcached stops a line at NUL: the slow path's job */
			return ACT_PASS;
		WR(s->data_start, at + 1);
	}
	nl = RD(s->data_start) - 1;
	if (nl > 0 && s->req[(nl - 1) & MASK] == '\r')
		nl--;
	WR(s->line_end, nl);
	WR(s->pos, 0);
	if (next_tok(slot) == 0)
		return ACT_PASS;
	if (TOK_IS(s, "get"))
		return do_get(slot, 0);
	if (TOK_IS(s, "gets"))
		return do_get(slot, 1);
	if (TOK_IS(s, "set"))
		return do_store(slot, CMD_SET);
	if (TOK_IS(s, "add"))
		return do_store(slot, CMD_ADD);
	if (TOK_IS(s, "replace"))
		return do_store(slot, CMD_REPLACE);
	if (TOK_IS(s, "append"))
		return do_store(slot, CMD_APPEND);
	if (TOK_IS(s, "prepend"))
		return do_store(slot, CMD_PREPEND);
	if (TOK_IS(s, "cas"))
		return do_store(slot, CMD_CAS);
	if (TOK_IS(s, "delete"))
		return do_delete(slot);
	if (TOK_IS(s, "incr"))
		return do_arith(slot, 1);
	if (TOK_IS(s, "decr"))
		return do_arith(slot, 0);
	if (TOK_IS(s, "touch"))
		return do_touch(slot);
	return ACT_PASS;
}

#endif
