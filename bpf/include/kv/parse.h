/* The command line of a request in the scratch: tokens, numbers, the key
 * (copied and hashed), exptime, noreply, a storage command's arguments and
 * data block. The loops sit in global functions, verified once each.
 * Part of bpf/kv.bpf.c, which includes it after its maps, its scratch
 * (struct scratch, MASK, STAT_INC, get_scratch) and its configuration:
 * not a header of its own. */
#ifndef XDPLAB_KV_PARSE_H
#define XDPLAB_KV_PARSE_H

/* ---- tokenizer and number parsing (global: verified once) ---- */

/* Next space-separated token of the command line into s->ts/s->tl; returns
 * its length, or TOK_TOO_LONG. */
__noinline int next_tok(__u32 slot)
{
	struct scratch *s = get_scratch(slot);

	if (!s)
		return 0;
	return next_token(s->req, MASK, &s->pos, &s->line_end, &s->ts, &s->tl, KV_KEY_MAX, TOK_TOO_LONG);
}

/* The current token as an unsigned decimal into s->num: 0 ok, -1 not a plain
 * number or overflow (the slow path then answers as memcached does). */
__noinline int tok_u64(__u32 slot)
{
	struct scratch *s = get_scratch(slot);
	__u64 v;

	if (!s)
		return -1;
	if (token_u64(s->req, MASK, &s->ts, &s->tl, 20, &v) < 0)
		return -1;
	WR(s->num, v);
	return 0;
}

/* The map key: a multiply-xorshift hash over s->key a word at a time (the
 * key is zero-padded to a whole word), mixed with its length. */
__noinline int hash_key(__u32 slot)
{
	struct scratch *s = get_scratch(slot);
	__u64 h = 0x9e3779b97f4a7c15ULL;
	__u32 i;

	if (!s)
		return -1;
	for (i = 0; i < KV_KEY_SLOT / 8; i++) {
		if (i * 8 >= RD(s->klen))
			break;
		h = (h ^ ((__u64 *)s->key)[i]) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	h ^= RD(s->klen);
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 29;
	WR(s->hash, h);
	return 0;
}

/* The current token becomes the key: copied zero-padded to s->key, hashed. */
__noinline int load_key(__u32 slot)
{
	struct scratch *s = get_scratch(slot);
	__u32 tl, i;

	if (!s)
		return -1;
	tl = RD(s->tl);
	if (tl == 0 || tl > KV_KEY_MAX)
		return -1;
	for (i = 0; i < KV_KEY_SLOT / 8; i++) {
		if (i * 8 >= RD(s->tl))
			break;
		((__u64 *)s->key)[i] = LD8(&s->req[(RD(s->ts) + i * 8) & MASK]);
	}
	/* Zero what the last word read past the key. */
	if (tl & 7)
		((__u64 *)s->key)[((tl - 1) / 8) & 31] &= ~0ULL >> (64 - 8 * (tl & 7));
	WR(s->klen, tl);
	return hash_key(slot);
}

/* ---- command arguments ---- */

/* The current token as memcached's exptime (optional '-', digits) into
 * s->exptime; -1 for anything else. */
static __always_inline int tok_exptime(__u32 slot, struct scratch *s)
{
	int neg = 0;

	if (s->req[RD(s->ts) & MASK] == '-') {
		WR(s->ts, RD(s->ts) + 1);
		WR(s->tl, RD(s->tl) - 1);
		neg = 1;
	}
	if (tok_u64(slot) < 0 || RD(s->num) > 0x7fffffffULL)
		return -1;
	WR(s->exptime, neg ? -(__s64)RD(s->num) : (__s64)RD(s->num));
	return 0;
}

/* Is the rest of the line exactly [noreply]? Sets s->noreply; -1 otherwise. */
static __always_inline int opt_noreply(__u32 slot, struct scratch *s)
{
	WR(s->noreply, 0);
	if (next_tok(slot) == 0)
		return 0;
	if (!TOK_IS(s, "noreply") || next_tok(slot) != 0)
		return -1;
	WR(s->noreply, 1);
	return 0;
}

/* Parses "<key> <flags> <exptime> <bytes> [cas] [noreply]" and checks the data
 * block. 0 ok, -1 leave it to the slow path. */
static __always_inline int parse_storage(__u32 slot, struct scratch *s, int cmd)
{
	__u32 ds, n;

	if (next_tok(slot) == 0 || load_key(slot) < 0)
		return -1;
	if (next_tok(slot) == 0 || tok_u64(slot) < 0 || RD(s->num) > 0xffffffffULL)
		return -1;
	WR(s->flags, (__u32)RD(s->num));
	if (next_tok(slot) == 0 || tok_exptime(slot, s) < 0)
		return -1;
	if (next_tok(slot) == 0 || tok_u64(slot) < 0 || RD(s->num) > val_cap)
		return -1;
	WR(s->nbytes, (__u32)RD(s->num));
	if (cmd == CMD_CAS) {
		if (next_tok(slot) == 0 || tok_u64(slot) < 0)
			return -1;
		WR(s->cas_in, RD(s->num));
	}
	if (opt_noreply(slot, s) < 0)
		return -1;
	/* The data block must end with \r\n and be the datagram's last bytes. */
	ds = RD(s->data_start);
	n = RD(s->nbytes);
	if (ds + n + 2 != RD(s->req_len))
		return -1;
	if (s->req[(ds + n) & MASK] != '\r' || s->req[(ds + n + 1) & MASK] != '\n')
		return -1;
	return 0;
}

/* [noreply], and nothing after the command line in the datagram. */
static __always_inline int tail_noreply(__u32 slot, struct scratch *s)
{
	if (opt_noreply(slot, s) < 0)
		return -1;
	/* Nothing may follow the command line in the datagram. */
	if (RD(s->data_start) != RD(s->req_len))
		return -1;
	return 0;
}

#endif
