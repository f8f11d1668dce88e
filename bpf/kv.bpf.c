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
 * that keeps the exploration additive across loops and works on 5.10.
 *
 * This file holds the configuration, the maps, the scratch and the entry
 * points (kv_xdp, kv_control); the rest comes in by concern from
 * bpf/include/kv/: item.h (items, expiry, stripe locks), parse.h (the
 * command line), reply.h (formatting), commands.h (the commands and their
 * dispatch), packet.h (payload copies, checksum, rate budget). */
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

/* Load-time configuration, fixed before the verifier sees it. lab/kv sets
 * every one; val_cap's and reply_max's defaults are what
 * lab/verifier/limits loads its variants with (it sets neither but for the
 * value-slot variants), so they are not dead. */
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
/* IPv4 replies carry no UDP checksum (0, which IPv4 allows; lab/kv.Config.
 * UDPZeroChecksum): saves summing each reply. IPv6 requires one. */
const volatile __u8 udp_zero_csum = 0;
/* bpf_xdp_load_bytes and bpf_xdp_store_bytes exist (5.18+): the payload's
 * copies are one call each (pkt_copy_ctx). */
const volatile __u8 xdp_bytes = 0;

/* CLOCK_MONOTONIC to unix time, kept current by the slow path. */
volatile __s64 unix_offset_ns = 0;

/* Bumped by lab/kv (SetAddrs) after it removes an address from own_addrs:
 * voids each CPU's remembered own address (own_addr). */
volatile __u32 addrs_gen = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__uint(key_size, sizeof(__u64));
	__uint(value_size, sizeof(struct kv_val) + KV_VAL_MAX + KV_VAL_SLACK);
} kv SEC(".maps");

/* A token bucket of reply bytes per source address (IPv4 as ::ffff:a.b.c.d).
 * Updated without a lock: two CPUs serving one source may both spend the same
 * tokens, so the rate holds within a factor of the CPUs serving it. A CPU
 * answering one source again takes a slice of its bucket at once and writes
 * the bucket only when the slice runs out (over_rate). A spoofed
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
	__u64 own[2];  /* the last destination found in own_addrs (own_addr) */
	__u32 own_gen; /* addrs_gen then */
	__u32 own_ok;  /* own holds one */
	__u64 rl_src[2]; /* the source of the last reply rate-checked (over_rate) */
	__u64 rl_lease;  /* bytes of its budget this CPU holds (over_rate) */
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

/* Whether dst (16 bytes) is in own_addrs. A CPU remembers the last address
 * it found there, as the store's traffic goes to one or two, and asks the
 * map again only for another address or after addrs_gen moved: a hash
 * lookup of a 16-byte key per request saved. */
static __always_inline int own_addr(struct scratch *s, const __u64 *dst)
{
	__u32 gen = addrs_gen;

	if (s->own_ok && s->own_gen == gen && s->own[0] == dst[0] && s->own[1] == dst[1])
		return 1;
	if (!bpf_map_lookup_elem(&own_addrs, dst))
		return 0;
	s->own[0] = dst[0];
	s->own[1] = dst[1];
	s->own_gen = gen;
	s->own_ok = 1;
	return 1;
}

#include "kv/item.h"
#include "kv/parse.h"
#include "kv/reply.h"
#include "kv/commands.h"
#include "kv/packet.h"

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
	__u64 dst[2]; /* 16 bytes, aligned for own_addr's word compares */

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
	pkt_addr16(&p, (__u8 *)dst, 1);
	fr = (void *)(udp + 1);
	/* The slow path's own runs count as commands, not as traffic, and use
	 * a scratch slot of their own. They come through BPF_PROG_TEST_RUN,
	 * which puts frames on the namespace's loopback device: no remote frame
	 * arrives there (and Attach refuses loopback), so a sender who guesses
	 * the token still gets an ordinary request. */
	if (ctx->ingress_ifindex == LOOPBACK_IFINDEX && (void *)(fr + 1) <= data_end && slow_token &&
	    fr->reserved == bpf_htons(slow_token))
		slot = 1;
	s = get_scratch(slot);
	if (!s)
		return XDP_PASS;
	if (!slot && !own_addr(s, dst))
		return XDP_PASS; /* not ours: transit, broadcast, multicast */
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
	if (copy_pkt(ctx, s, data, data_end, hoff + sizeof(*udp) + sizeof(*fr), 0) < 0)
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
			__u64 src[2]; /* 16 bytes, aligned for over_rate's word compares */

			/* The tail probe above moved the frame's pointers. */
			if (pkt_reload(&p, ctx) < 0)
				goto pass;
			pkt_addr16(&p, (__u8 *)src, 0);
			if (over_rate(s, src, rlen, RD(s->now))) {
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
	if (copy_pkt(ctx, s, data, data_end, hoff + sizeof(*udp) + sizeof(*fr), 1) < 0)
		return XDP_DROP;
	if (p.v6 || !udp_zero_csum) { /* else udp->check stays 0 (pkt_turn) */
		sum += frame_sum16(udp, sizeof(*udp) + sizeof(*fr));
		sum = sum_resp(s, frame_fold32(sum));
		udp->check = frame_fold(sum) ?: 0xffff;
	}
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
		nv->seq = 0;
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
			seq_begin(v);
			v->cas = 0;
			v->slow = 0;
			v->len = 0;
			seq_end(v);
			wrote = 1;
		}
	} else {
		wrote = 1;
		seq_begin(v);
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
		seq_end(v);
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
