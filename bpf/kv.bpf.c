// SPDX-License-Identifier: GPL-2.0
/* The XDP key-value store: memcached's text protocol over UDP, answered in XDP.
 *
 * What XDP finishes: single-datagram requests holding exactly one well-formed
 * get/gets/set/add/replace/append/prepend/cas/delete/incr/decr/touch whose
 * values fit the in-kernel slot and whose reply fits one datagram. Everything
 * else (errors, odd spellings, big values, stats, pipelined commands) goes up
 * with XDP_PASS to the Go slow path, which speaks memcached exactly.
 *
 * Verifier shape: parse state lives in a per-CPU scratch map, not in locals,
 * and the loops sit in global functions that the verifier checks once each;
 * that keeps the exploration additive across loops and works on 5.10. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "frame.h"
#include "kv.h"
#include "mcframe.h"
#include "pkt.h"
#include "scan.h"

#define REQ_MAX 2048 /* scratch buffers; a power of two so indices can be masked */
#define MASK (REQ_MAX - 1)
#define HDR_MAX 72 /* Ethernet + IPv6 + UDP + frame header, rounded up to words */
#define TOK_TOO_LONG 0x10000 /* longer than any token XDP handles */
#define ARITH_GROW 16 /* an incr/decr reply is at most 22 bytes, its request at least 10 */
#define LOOPBACK_IFINDEX 1 /* the loopback device's, in every network namespace */

/* Load-time configuration, fixed before the verifier sees it. */
const volatile __u16 port = 11211;
const volatile __u32 val_cap = 1024;    /* bytes of data per item; multiple of 8 */
const volatile __u32 reply_max = 1392;  /* largest reply payload sent from XDP */
const volatile __u8 coarse_clock = 0; /* bpf_ktime_get_coarse_ns exists (5.11+) */
const volatile __u16 slow_token = 0;    /* frame 'reserved' value of the slow path's own test runs (scratch slot 1) */
/* UDP abuse limits (lab/kv.Config): no UDP at all; a get's reply at most
 * amp_ratio times its request; reply bytes per second per source. */
const volatile __u8 udp_off = 0;
const volatile __u32 amp_ratio = 0;      /* 0: no ratio cap */
const volatile __u64 rate_bytes = 0;     /* 0: no rate limit; below 2^32 */
const volatile __u64 rate_burst = 0;

/* CLOCK_MONOTONIC to unix time, kept current by the slow path. */
volatile __s64 unix_offset_ns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__uint(key_size, sizeof(__u64));
	__uint(value_size, sizeof(struct kv_val) + KV_VAL_MAX + KV_VAL_SLACK);
} kv SEC(".maps");

/* A token bucket of reply bytes per source address (IPv4 as ::ffff:a.b.c.d).
 * Updated without a lock: two CPUs serving one source may both spend the same
 * tokens, so the rate holds within a factor of the CPUs serving it. A spoofed
 * flood from many sources churns the LRU, but each victim address is one
 * bucket. */
struct rate_bucket {
	__u64 tokens;
	__u64 stamp; /* ns */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__uint(key_size, 16);
	__type(value, struct rate_bucket);
} udp_rate SEC(".maps");

/* The addresses the store serves (IPv4 as ::ffff:a.b.c.d): those of the
 * namespace its slow path listens in, or a configured set (lab/kv.Objects.
 * SetAddrs). Frames to any other address are transit or broadcast, and
 * pass. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__uint(key_size, 16);
	__type(value, __u8);
} own_addrs SEC(".maps");

struct stripe {
	struct bpf_spin_lock lock;
};

/* LRU hash values cannot hold a bpf_spin_lock, so items are guarded by
 * stripe locks picked by key hash. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KV_NLOCKS);
	__type(key, __u32);
	__type(value, struct stripe);
} locks SEC(".maps");

struct scratch {
	__u8 req[REQ_MAX + 8];
	__u8 resp[REQ_MAX + 8];
	__u8 tmp[KV_VAL_MAX + 16];
	__u8 key[KV_KEY_SLOT];
	__u8 hdr[HDR_MAX];   /* the request's headers, while the frame is resized */
	__u8 val[sizeof(struct kv_val) + KV_VAL_MAX + KV_VAL_SLACK]; /* staging for inserts */
	__u32 req_len;
	__u32 line_end;   /* index of the '\r' or '\n' ending the command line */
	__u32 data_start; /* index after that line's '\n' */
	__u32 pos;        /* tokenizer position */
	__u32 ts, tl;     /* current token */
	__u32 resp_len;
	__u32 klen;
	__u32 flags;
	__u32 nbytes;
	__u32 noreply;
	__u32 slot;
	__u32 nd;   /* digits of a number being written */
	__u32 poff; /* payload offset in the frame */
	__u32 alen; /* length of the item being changed */
	__u32 room; /* bytes the frame can grow by (probed): see do_arith; then grow_reply's */
	__s64 exptime;
	__u64 num;
	__u64 cas_in;
	__u64 hash;
	__u64 cas_seq;
	__u64 now; /* unix time in ns when the packet arrived */
	struct kv_stats st; /* this CPU's (and slot's) counters */
};

/* Slot 0 serves XDP; slot 1 serves the slow path's test runs, which a softirq
 * running XDP on the same CPU may interrupt. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

enum { ACT_PASS = 0, ACT_TX = 1, ACT_DROP = 2 };
enum { CMD_SET = 1, CMD_ADD, CMD_REPLACE, CMD_APPEND, CMD_PREPEND, CMD_CAS };

/* Counters live in the per-CPU scratch the code already holds: a lookup of
 * their own per increment cost a GET hit some 50 ns. */
#define STAT_INC(field) (s->st.field++)

static __always_inline struct scratch *get_scratch(__u32 slot)
{
	__u32 k = slot & 1;
	return bpf_map_lookup_elem(&scratch, &k);
}

#define NSEC 1000000000ULL

/* Unix time in ns, read once per packet (kv_xdp stores it in the scratch):
 * liveness compares exptime * NSEC with it, which spares the read paths a
 * 64-bit division. */
static __always_inline __u64 clock_ns(void)
{
	/* Expiry has second granularity, so the jiffy-precise clock serves,
	 * and is cheaper; older kernels never see the call (dead code). */
	__u64 t = coarse_clock ? bpf_ktime_get_coarse_ns() : bpf_ktime_get_ns();

	return (__u64)((__s64)t + unix_offset_ns);
}

#define now_ns() RD(s->now)

static __always_inline __u64 new_cas(struct scratch *s, __u32 slot)
{
	__u64 seq = ++s->cas_seq;
	return (seq << 10) | ((__u64)(slot & 1) << 8) | (bpf_get_smp_processor_id() & 0xff);
}

/* memcached's realtime(): 0 never; negative already expired; up to 30 days
 * relative; beyond that an absolute unix time. */
static __always_inline __u64 abs_exptime(__s64 e, __u64 now)
{
	if (e == 0)
		return 0;
	if (e < 0)
		return 1;
	if (e <= RELTIME_MAX)
		return now + e;
	return e;
}

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

/* ---- reply building ---- */

static __always_inline void put(struct scratch *s, __u32 *o, const char *str, __u32 n)
{
#pragma unroll
	for (__u32 i = 0; i < n; i++)
		s->resp[(*o + i) & MASK] = str[i];
	*o += n;
}

#define PUT(s, o, lit) put(s, o, lit, sizeof(lit) - 1)

static __always_inline __u32 ndigits(__u64 v)
{
	__u64 p = 10;
	__u32 n = 1;

	for (__u32 i = 0; i < 19; i++) {
		if (v < p)
			break;
		n++;
		p *= 10;
	}
	return n;
}

/* Decimal digits of v into buf at o, written from the right; no stack array,
 * since 5.10's verifier rejects variable-offset stack reads. */
#define PUT_DIGITS_T(T, buf, bufmask, at, v, n)                    \
	do {                                                        \
		T __v = (v);                                        \
		for (__u32 __i = 0; __i < 20; __i++) {              \
			if (__i >= (n))                             \
				break;                              \
			(buf)[((at) + (n) - 1 - __i) & (bufmask)] = '0' + __v % 10; \
			__v /= 10;                                  \
		}                                                   \
	} while (0)

/* 32-bit numbers (flags, lengths) divide by ten with a multiply; only
 * 64-bit ones need the slow division. */
#define PUT_DIGITS(buf, bufmask, at, v, n)                              \
	do {                                                            \
		if ((__u64)(v) <= 0xffffffffULL)                        \
			PUT_DIGITS_T(__u32, buf, bufmask, at, v, n);    \
		else                                                    \
			PUT_DIGITS_T(__u64, buf, bufmask, at, v, n);    \
	} while (0)

static __always_inline void put_u64(struct scratch *s, __u32 *o, __u64 v)
{
	WR(s->nd, ndigits(v));
	PUT_DIGITS(s->resp, MASK, *o, v, RD(s->nd));
	*o += RD(s->nd);
}

/* One-line replies: the whole reply of a command. */
static __always_inline int reply_line(__u32 slot, int which)
{
	struct scratch *s = get_scratch(slot);
	__u32 o = 0;

	if (!s)
		return ACT_PASS;
	if (RD(s->noreply))
		return ACT_DROP;
	switch (which) {
	case 0: PUT(s, &o, "STORED\r\n"); break;
	case 1: PUT(s, &o, "NOT_STORED\r\n"); break;
	case 2: PUT(s, &o, "EXISTS\r\n"); break;
	case 3: PUT(s, &o, "NOT_FOUND\r\n"); break;
	case 4: PUT(s, &o, "DELETED\r\n"); break;
	case 5: PUT(s, &o, "TOUCHED\r\n"); break;
	default: return ACT_PASS;
	}
	WR(s->resp_len, o);
	return ACT_TX;
}

enum { R_STORED, R_NOT_STORED, R_EXISTS, R_NOT_FOUND, R_DELETED, R_TOUCHED };

/* ---- item access; callers hold the key's stripe lock ---- */

/* The stripe lock does not keep the element ours: when the map is full, an
 * insert on another CPU may evict it and the kernel hands it straight to the
 * new key (no grace period), copying the new item in without our lock. The
 * kernel unlinks an element before it reuses it, so finding it still under
 * h after the locked section means nothing was copied into it meanwhile.
 * Otherwise what was read may be torn, and what was written may have landed
 * in another key's item: the caller voids that item (a writer) and lets the
 * slow path do the request again. */
static __always_inline int still_mapped(__u64 h, struct kv_val *v)
{
	return bpf_map_lookup_elem(&kv, &h) == (void *)v;
}

static __always_inline void void_item(struct kv_val *v)
{
	v->cas = 0;
	v->slow = 0;
}

static __always_inline struct stripe *stripe_of(__u64 h)
{
	__u32 k = (__u32)(h ^ (h >> 32)) & (KV_NLOCKS - 1);
	return bpf_map_lookup_elem(&locks, &k);
}

/* Keys are compared and copied a word at a time up to their length; the
 * last word is zero-padded (load_key), so equal keys have equal words. */
static __always_inline int key_eq(struct scratch *s, struct kv_val *v)
{
	__u64 diff = v->klen ^ RD(s->klen);

	for (__u32 i = 0; i < KV_KEY_SLOT / 8; i++) {
		if (diff || i * 8 >= RD(s->klen))
			break;
		diff |= ((__u64 *)v->key)[i] ^ ((__u64 *)s->key)[i];
	}
	return diff == 0;
}

/* A live item of this key: present, not deleted, not expired, ours. now is
 * unix time in ns. */
static __always_inline int is_live(struct scratch *s, struct kv_val *v, __u64 now)
{
	if (!v->cas || !key_eq(s, v))
		return 0;
	if (v->exptime && v->exptime * NSEC <= now)
		return 0;
	return 1;
}

static __always_inline void set_key(struct scratch *s, struct kv_val *v)
{
	for (__u32 i = 0; i < KV_KEY_SLOT / 8; i++) {
		if (i * 8 >= RD(s->klen))
			break;
		((__u64 *)v->key)[i] = ((__u64 *)s->key)[i];
	}
	v->klen = RD(s->klen);
}

/* Copy the request's data block into v->data at 'at' (bounded by val_cap). */
static __always_inline void copy_data_in(struct scratch *s, struct kv_val *v, __u32 at)
{
	__u32 ds = RD(s->data_start), n = RD(s->nbytes);

	for (__u32 i = 0; i < KV_VAL_MAX / 8 + 1; i++) {
		__u32 o = i * 8;
		__u64 d = (__u64)at + o;

		if (o >= n || d > val_cap)
			break;
		PIN(d);
		CP8(&v->data[d], &s->req[(ds + o) & MASK]);
	}
}

/* ---- commands (global: verified once) ---- */

/* get/gets: one VALUE block per hit, then END. The item's fields go through
 * the scratch map (flags, nbytes, num) so loop exits do not fork the state. */
__noinline int get_one(__u32 slot, __u32 with_cas)
{
	struct scratch *s = get_scratch(slot);
	struct kv_val *v;
	struct stripe *lk;
	__u64 now, h;
	__u32 o;
	int hit = 0, slow = 0, expired = 0;

	if (!s)
		return -1;
	now = now_ns();
	h = RD(s->hash);
	if (RD(s->resp_len) > REQ_MAX - 600)
		return -1;
	lk = stripe_of(h);
	v = bpf_map_lookup_elem(&kv, &h);
	if (!lk || !v)
		goto miss;
	bpf_spin_lock(&lk->lock);
	if (v->slow && key_eq(s, v)) {
		slow = 1;
	} else if (is_live(s, v, now)) {
		/* The whole VALUE block is written under the lock, the data
		 * straight from the item: no copy of it to stage. */
		hit = 1;
		WR(s->nbytes, v->len > val_cap ? val_cap : v->len);
		o = RD(s->resp_len);
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
		WR(s->resp_len, o);
	} else if (v->cas && key_eq(s, v)) {
		expired = 1;
	}
	bpf_spin_unlock(&lk->lock);
	if (slow || (hit && !still_mapped(h, v)))
		return -1;
	if (hit) {
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
		if (get_one(slot, with_cas) < 0)
			return ACT_PASS;
	}
	if (k == 0 || next_tok(slot) != 0)
		return ACT_PASS;
	o = RD(s->resp_len);
	PUT(s, &o, "END\r\n");
	if (o > reply_max)
		return ACT_PASS;
	WR(s->resp_len, o);
	return ACT_TX;
}


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
			v->cas = 0;
			v->len = 0;
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
			v->exptime = exp;
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
	int found = 0;

	if (!s)
		return ACT_PASS;
	len = RD(s->req_len);
	/* Skip whole words holding neither '\n' nor NUL, then look at bytes. */
	for (i = 0; i < PAYLOAD_MAX / 8; i++) {
		__u64 w = LD8(&s->req[i * 8]);

		if (i * 8 >= len || HAS_BYTE(w, '\n') || HAS_ZERO(w))
			break;
	}
	WR(s->data_start, i * 8);
	for (i = 0; i < 8; i++) {
		__u32 at = RD(s->data_start) + i;

		if (at >= RD(s->req_len))
			break;
		if (s->req[at & MASK] == 0) /* memcached stops a line at NUL: the slow path's job */
			return ACT_PASS;
		if (s->req[at & MASK] == '\n') {
			WR(s->data_start, at + 1);
			found = 1;
			break;
		}
	}
	if (!found)
		return ACT_PASS;
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

/* ---- packet in, packet out ---- */

/* The payload between the frame and the scratch: req in, resp out. */
static __always_inline int copy_pkt(struct scratch *s, void *data, void *data_end, __u32 off, int out)
{
	return pkt_copy(data, data_end, off, out ? s->resp : s->req, MASK, out ? &s->resp_len : &s->req_len,
			&s->poff, out);
}

/* Ones' complement sum of resp[0..resp_len), padded with zeros to 4 bytes. */
static __always_inline __u64 sum_resp(struct scratch *s, __u64 seed)
{
	__u32 len = RD(s->resp_len) & MASK;
	__u32 l4 = (len + 3) & ~3U;

	for (__u32 j = 0; j < 3; j++)
		if (len + j < l4)
			s->resp[(len + j) & MASK] = 0;
#pragma unroll
	for (__u32 c = 0; c < 4; c++) {
		__u32 off = c * 512, sz;

		l4 = (RD(s->resp_len) + 3) & ~3U;
		if (l4 <= off)
			break;
		sz = l4 - off;
		if (sz > 512)
			sz = 512;
		seed = (__u32)bpf_csum_diff(0, 0, (void *)&s->resp[off], sz, (__u32)seed);
	}
	return seed;
}

/* Spends n bytes of src's budget; 0 when it had them. */
static __always_inline int over_rate(const void *src, __u32 n, __u64 now)
{
	struct rate_bucket *b, nb;
	__u64 t;

	b = bpf_map_lookup_elem(&udp_rate, src);
	if (!b) {
		if (n > rate_burst)
			return 1;
		nb.tokens = rate_burst - n;
		nb.stamp = now;
		bpf_map_update_elem(&udp_rate, src, &nb, BPF_ANY);
		return 0;
	}
	t = b->tokens;
	if (now > b->stamp) {
		__u64 dt = now - b->stamp;

		/* dt below a second and rate below 2^32: no overflow */
		t += dt >= NSEC ? rate_burst : dt * rate_bytes / NSEC;
		if (t > rate_burst)
			t = rate_burst;
		b->stamp = now;
	}
	if (t < n) {
		b->tokens = t;
		return 1;
	}
	b->tokens = t - n;
	return 0;
}

enum { GROW_PASS = 1, GROW_DROP = 2 };

/* Copies the frame's first hlen bytes (in words, HDR_MAX at most) to hdr,
 * or back from it when out is 1: 0, or -1 when the frame is shorter. */
static __always_inline int hdr_copy(struct xdp_md *ctx, __u8 *hdr, __u32 hlen, int out)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	for (__u32 i = 0; i < HDR_MAX / 8; i++) {
		void *p = data + i * 8;

		if (i * 8 >= hlen)
			break;
		if (p + 8 > data_end)
			return -1;
		if (out)
			CP8(p, &hdr[i * 8]);
		else
			CP8(&hdr[i * 8], p);
	}
	return 0;
}

/* Makes the frame delta bytes longer (or shorter) for the reply, its
 * headers kept at its front: 0; GROW_PASS when it cannot, with the frame as
 * it came, for the slow path; GROW_DROP when the frame broke.
 *
 * It grows at the tail where the driver leaves room. A veth copies a frame
 * from a socket into a page_pool fragment sized to it since 6.6
 * (skb_pp_cow_data), which leaves the tail SKB_DATA_ALIGN's slack only, so
 * otherwise it grows the head as far as it goes (XDP gives 256 bytes, less
 * the xdp_frame XDP_TX keeps), the tail by the rest, and moves the headers
 * to the new front (netlab.ProbeRoom measures both ends on a veth). Global:
 * verified once, however it went. */
__noinline int grow_reply(struct xdp_md *ctx, __u32 slot, int delta, __u32 hlen)
{
	struct scratch *s = get_scratch(slot);
	int got;

	if (!s)
		return GROW_PASS;
	if (!bpf_xdp_adjust_tail(ctx, delta))
		return 0;
	/* The tail could not move, so the frame is as it was: keep its
	 * headers, grow, put them back. */
	if (delta <= 0)
		return GROW_PASS;
	if (hdr_copy(ctx, s->hdr, hlen, 0))
		return GROW_PASS;
	if (bpf_xdp_adjust_head(ctx, -delta)) {
		/* Less than delta at the head: all it gives, in halving
		 * steps, and the rest at the tail. */
		WR(s->room, 0);
#pragma unroll
		for (int step = 256; step; step >>= 1)
			if (RD(s->room) + step < (__u32)delta && !bpf_xdp_adjust_head(ctx, -step))
				WR(s->room, RD(s->room) + step);
		got = RD(s->room);
		if (!got)
			return GROW_PASS;
		if (bpf_xdp_adjust_tail(ctx, delta - got))
			/* The frame as it came, for the slow path. */
			return bpf_xdp_adjust_head(ctx, got) ? GROW_DROP : GROW_PASS;
	}
	return hdr_copy(ctx, s->hdr, hlen, 1) ? GROW_DROP : 0;
}

SEC("xdp")
int kv_xdp(struct xdp_md *ctx)
{
	void *data, *data_end;
	struct udphdr *udp;
	struct mc_frame *fr;
	struct scratch *s;
	struct pkt p;
	__u32 hoff, slot = 0, plen, rlen;
	int act, n;
	__u8 dst[16];

	if (pkt_udp(&p, ctx) < 0 || p.udp->dest != bpf_htons(port))
		return XDP_PASS;
	/* What the kernel would drop, or take as nobody's in particular, is
	 * not a request: it passes untouched (frame.h). Checked only for the
	 * store's port, so other traffic pays nothing. */
	if (!pkt_rx_ok(&p))
		return XDP_PASS;
	data = p.data;
	data_end = p.data_end;
	udp = p.udp;
	hoff = p.hoff;
	pkt_addr16(&p, dst, 1);
	fr = (void *)(udp + 1);
	/* The slow path's own runs count as commands, not as traffic, and use
	 * a scratch slot of their own. They come through BPF_PROG_TEST_RUN,
	 * which puts frames on the namespace's loopback device: no remote frame
	 * arrives there (and Attach refuses loopback), so a sender who guesses
	 * the token still gets an ordinary request. */
	if (ctx->ingress_ifindex == LOOPBACK_IFINDEX && (void *)(fr + 1) <= data_end && slow_token &&
	    fr->reserved == bpf_htons(slow_token))
		slot = 1;
	if (!slot && !bpf_map_lookup_elem(&own_addrs, dst))
		return XDP_PASS; /* not ours: transit, broadcast, multicast */
	s = get_scratch(slot);
	if (!s)
		return XDP_PASS;
	if (!slot)
		STAT_INC(rx);
	if (udp_off && !slot)
		goto pass; /* no socket takes it: the kernel says port unreachable */
	/* No reply to a well-known port, nor to memcached's or the store's
	 * own: one spoofed datagram must not start a loop between two
	 * servers (lab/memcache.Unanswerable, which the slow path applies,
	 * has the whole rule). */
	if (mc_loop_port(udp->source, port)) {
		STAT_INC(reflect_drop); /* never the slow path's own runs: slowSrcPort */
		return XDP_DROP;
	}
	if ((void *)(fr + 1) > data_end)
		goto pass;
	n = pkt_payload_len(&p, sizeof(*fr), PAYLOAD_MAX);
	if (n < 0)
		goto pass;
	plen = n;
	if (plen > PAYLOAD_MAX || !mc_frame_single(fr))
		goto pass;
	WR(s->req_len, plen);
	if (copy_pkt(s, data, data_end, hoff + sizeof(*udp) + sizeof(*fr), 0) < 0)
		goto pass;
	WR(s->slot, slot);
	WR(s->now, clock_ns());
	/* Tailroom varies by driver (a veth gives little): find out whether a
	 * reply may outgrow the request by ARITH_GROW before incr/decr changes
	 * anything, since a reply that cannot be sent goes up to the slow path,
	 * which would apply the command again. Only for what may be incr/decr
	 * (decr, delete), so gets pay nothing. */
	WR(s->room, 0);
	if ((s->req[0] == 'i' || s->req[0] == 'd') && bpf_xdp_adjust_tail(ctx, ARITH_GROW) == 0) {
		WR(s->room, ARITH_GROW);
		bpf_xdp_adjust_tail(ctx, -ARITH_GROW);
	}

	act = process(slot);
	if (act == ACT_DROP) {
		if (!slot)
			STAT_INC(drop);
		return XDP_DROP;
	}
	if (act != ACT_TX)
		goto pass;

	/* Turn the request into the reply in place. */
	rlen = RD(s->resp_len);
	if (rlen > PAYLOAD_MAX)
		goto pass;
	if (!slot) {
		/* A get's reply over the ratio cap goes up, where it is
		 * refused with a short error (a get changes nothing, so passing
		 * it is safe; other replies are a few bytes). One over the
		 * source's budget is lost, as on a congested link. */
		if (amp_ratio && s->req[0] == 'g' && rlen > amp_ratio * RD(s->req_len))
			goto pass;
		if (rate_bytes) {
			__u8 src[16];

			/* The tail probe above moved the frame's pointers. */
			if (pkt_reload(&p, ctx) < 0)
				goto pass;
			pkt_addr16(&p, src, 0);
			if (over_rate(src, rlen, RD(s->now))) {
				STAT_INC(rate_drop);
				return XDP_DROP;
			}
		}
	}
	/* The frame sized to the reply, its headers at its front. */
	n = grow_reply(ctx, slot, (int)rlen - (int)RD(s->req_len), hoff + sizeof(*udp) + sizeof(*fr));
	if (n == GROW_DROP)
		return XDP_DROP;
	if (n)
		goto pass;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (pkt_reload(&p, ctx) < 0)
		return XDP_DROP;
	udp = p.udp;
	fr = (void *)(udp + 1);
	if ((void *)(fr + 1) > p.data_end)
		return XDP_DROP;
	__u16 ulen = sizeof(*udp) + sizeof(*fr) + rlen;
	__u64 sum = pkt_turn(&p, ulen);

	fr->seq = 0;
	fr->total = bpf_htons(1);
	fr->reserved = 0;
	if (copy_pkt(s, data, data_end, hoff + sizeof(*udp) + sizeof(*fr), 1) < 0)
		return XDP_DROP;
	sum += frame_sum16(udp, sizeof(*udp) + sizeof(*fr));
	sum = sum_resp(s, frame_fold32(sum));
	udp->check = frame_fold(sum) ?: 0xffff;
	if (!slot)
		STAT_INC(tx);
	return XDP_TX;
pass:
	if (!slot)
		STAT_INC(pass);
	return XDP_PASS;
}

/* The slow path's control program: struct kv_ctl in, struct kv_ctl out
 * (through BPF_PROG_TEST_RUN's data_out). Always returns XDP_PASS; the result
 * is in kv_ctl.result. */
SEC("xdp")
int kv_control(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct kv_ctl *c = data;
	struct scratch *s = get_scratch(1);
	struct kv_val *v;
	struct stripe *lk;
	__u64 h, now, cas, ncas;
	__u32 op, cond, len, res = KV_CTL_OK;
	int live, ours, present, wrote = 0;

	if (!s || (void *)(c + 1) > data_end)
		return XDP_PASS;
	op = c->op;
	cond = c->cond;
	cas = c->cas;
	now = c->now;
	len = c->len;
	if (c->klen == 0 || c->klen > KV_KEY_MAX || len > val_cap) {
		c->result = KV_CTL_ERROR;
		return XDP_PASS;
	}
	for (__u32 i = 0; i < KV_KEY_SLOT / 8; i++)
		((__u64 *)s->key)[i] = ((__u64 *)c->key)[i];
	WR(s->klen, c->klen);
	hash_key(1);
	h = RD(s->hash);
	lk = stripe_of(h);
	if (!lk) {
		c->result = KV_CTL_ERROR;
		return XDP_PASS;
	}
	ncas = c->new_cas ? c->new_cas : new_cas(s, 1);
	v = bpf_map_lookup_elem(&kv, &h);
	if (!v) {
		struct kv_val *nv = (struct kv_val *)s->val;

		if (op == KV_CTL_LOAD || op == KV_CTL_DELETE) {
			c->result = op == KV_CTL_LOAD ? KV_CTL_ABSENT : KV_CTL_OK;
			return XDP_PASS;
		}
		if (cond == KV_COND_CAS) {
			c->result = KV_CTL_FAILED;
			return XDP_PASS;
		}
		nv->cas = ncas;
		nv->exptime = op == KV_CTL_STORE ? c->exptime : 0;
		nv->flags = op == KV_CTL_STORE ? c->flags : 0;
		nv->len = op == KV_CTL_STORE ? len : 0;
		nv->slow = op == KV_CTL_MARK;
		set_key(s, nv);
		for (__u32 i = 0; i < KV_VAL_MAX / 8; i++) {
			__u64 d = i * 8;

			if (d >= len || d > val_cap)
				break;
			PIN(d);
			CP8(&nv->data[d], &c->data[d & 1023]);
		}
		if (bpf_map_update_elem(&kv, &h, nv, BPF_NOEXIST)) {
			c->result = KV_CTL_FAILED; /* raced with an insert, or full */
			return XDP_PASS;
		}
		STAT_INC(inserts);
		c->result = KV_CTL_OK;
		c->new_cas = ncas;
		return XDP_PASS;
	}
	bpf_spin_lock(&lk->lock);
	ours = v->cas && key_eq(s, v);
	live = ours && (v->slow || !(v->exptime && v->exptime <= now));
	present = live;
	if (cond == KV_COND_ABSENT && present)
		res = KV_CTL_FAILED;
	else if (cond == KV_COND_CAS && (!present || v->cas != cas))
		res = KV_CTL_FAILED;
	else if (op == KV_CTL_LOAD) {
		if (!present) {
			res = KV_CTL_ABSENT;
		} else {
			c->cas = v->cas;
			c->exptime = v->exptime;
			c->flags = v->flags;
			c->slow = v->slow;
			WR(s->alen, v->len > val_cap ? val_cap : v->len);
			c->len = RD(s->alen);
			for (__u32 i = 0; i < KV_VAL_MAX / 8; i++) {
				__u64 d = i * 8;

				if (d >= RD(s->alen) || d > val_cap)
					break;
				PIN(d);
				CP8(&c->data[d & 1023], &v->data[d]);
			}
		}
	} else if (op == KV_CTL_DELETE) {
		if (ours) {
			v->cas = 0;
			v->slow = 0;
			v->len = 0;
			wrote = 1;
		}
	} else {
		wrote = 1;
		if (!key_eq(s, v))
			set_key(s, v);
		v->cas = ncas;
		v->slow = op == KV_CTL_MARK;
		v->exptime = op == KV_CTL_STORE ? c->exptime : 0;
		v->flags = op == KV_CTL_STORE ? c->flags : 0;
		v->len = op == KV_CTL_STORE ? len : 0;
		for (__u32 i = 0; i < KV_VAL_MAX / 8; i++) {
			__u64 d = i * 8;

			if (op != KV_CTL_STORE || d >= len || d > val_cap)
				break;
			PIN(d);
			CP8(&v->data[d], &c->data[d & 1023]);
		}
		c->new_cas = ncas;
	}
	bpf_spin_unlock(&lk->lock);
	if (!still_mapped(h, v)) {
		if (wrote)
			void_item(v);
		res = KV_CTL_RETRY;
	}
	c->result = res;
	return XDP_PASS;
}

/* Make the shared types visible in BTF for bpf2go's Go types and constants. */
const struct kv_val *unused_kv_val __attribute__((unused));
const struct kv_ctl *unused_kv_ctl __attribute__((unused));
const enum kv_limit *unused_kv_limit __attribute__((unused));
const enum xdp_action *unused_xdp_action __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
