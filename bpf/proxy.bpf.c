// SPDX-License-Identifier: GPL-2.0
/* The XDP memcached proxy: routes each memcached UDP request by key to a
 * backend on nutcracker's ketama ring, and brings the backend's replies back.
 *
 * Requests: a datagram to the proxy's address and port holding exactly one
 * request whose keys all land on one backend (see lab/proxy/route.go, the Go
 * model this must agree with) gets its destination rewritten to that backend
 * and goes out with XDP_REDIRECT (XDP_TX if the backend is behind the same
 * interface). The source stays the client's, so the backend's reply comes
 * back through the proxy (its gateway) addressed to the client: replies need
 * no per-request state, and request ids stay the client's own.
 *
 * Replies: a datagram from a backend's address and port to a client that
 * sent that backend a request through the proxy (the flows map), arriving
 * on the interface the FIB sent that request out of (a source address
 * proves nothing; where it came in does), gets its source rewritten to the
 * proxy's address and port, and goes to the client.
 *
 * Flows are planted by requests, whose source anyone can write: a flood of
 * spoofed sources would push real clients' flows out of the LRU map (their
 * replies would stop coming back), and a backend's answers to the spoofed
 * sources mark those flows as used as much as real ones. So each CPU plants
 * at most new_flows flows a second (flow_admit); a request that would plant
 * one more goes to the slow path, which forwards from its own socket and
 * needs no flow. A flood turns the 65536 flows over no faster than in
 * 65536 / (new_flows x CPUs) seconds (a minute per CPU at the default,
 * 1024); a client whose flow goes plants it again with its next request,
 * or is served by the slow path while the flood spends the budget.
 *
 * Everything else passes untouched: frames the kernel would not take as the
 * host's (frame.h), other traffic, and requests XDP does not finish
 * (multi-key gets spanning backends, pipelined or multi-datagram requests,
 * anything odd), which the Go slow path on the same port serves.
 *
 * Verifier shape, as in kv.bpf.c: the payload is copied into a per-CPU
 * scratch map, the loops sit in global functions verified once each, and
 * values crossing loops go through the scratch map (RD/WR).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "frame.h"
#include "mcframe.h"
#include "pkt.h"
#include "scan.h"

#define AF_INET 2
#define AF_INET6 10

#define REQ_MAX 2048 /* scratch buffer; a power of two so indices can be masked */
#define MASK (REQ_MAX - 1)
#define KEY_MAX 250      /* memcached's KEY_MAX_LENGTH */
#define KEYS_MAX 24      /* keys of one get routed in XDP */
/* Bytes copied of a request other than get/gets: its first line, whatever
 * its data block; the longest well-formed storage line is ~330 bytes. */
#define LINE_COPY 384
#define TOK_BAD 0x10000
#define RING_MAX 16384 /* points; 160 per backend at equal weights: 102 backends */
#define RING_MASK (RING_MAX - 1)
#define RING_STEPS 15  /* binary search steps over RING_MAX points */
#define BACKENDS_MAX 256
#define BUCKETS 65536        /* of the hash space, by its top 16 bits */
#define BUCKET_MIXED 0xffff  /* a bucket whose hashes go to several backends */

/* The limits the Go side models and checks (lab/proxy: route.go's Route,
 * the ring and backend loaders), as an enum so that BTF carries them to
 * bpf2go's generated constants: Go never retypes them. BTF holds the enum
 * through unused_proxy_limit at the end. */
enum proxy_limit {
	PROXY_PAYLOAD_MAX = PAYLOAD_MAX,
	PROXY_KEY_MAX = KEY_MAX,
	PROXY_KEYS_MAX = KEYS_MAX,
	PROXY_LINE_COPY = LINE_COPY,
	PROXY_RING_MAX = RING_MAX,
	PROXY_BACKENDS_MAX = BACKENDS_MAX,
	PROXY_BUCKETS = BUCKETS,
	PROXY_BUCKET_MIXED = BUCKET_MIXED,
};

/* One backend: where requests of each family go. */
struct proxy_backend {
	__be32 addr4;
	__u8 addr6[16];
	__be16 port;
	__u8 has4;
	__u8 has6;
};

/* The ketama continuum, sorted by hash (lab/proxy.Ring.Points). */
struct proxy_ring {
	__u32 n; /* points in use; 0: no live backend */
	__u32 pad;
	__u32 hash[RING_MAX];
	__u16 backend[RING_MAX];
	/* The backend of every hash whose top 16 bits index it, or
	 * BUCKET_MIXED: a point splits the bucket, search the points. All
	 * but a few of 65,536 buckets are whole, so a lookup is one read. */
	__u16 bucket[BUCKETS];
};

/* A backend's address and port, IPv4 as ::ffff:a.b.c.d. */
struct proxy_addr {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

/* A client that sent a backend requests through the proxy. */
struct proxy_flow {
	__u8 addr[16]; /* the client's, IPv4 as ::ffff:a.b.c.d */
	__be16 port;
	__u16 backend;
};

/* Per-CPU counters. */
struct proxy_stats {
	__u64 requests;   /* datagrams to the proxy's address and port */
	__u64 forwarded;  /* requests sent to a backend from XDP */
	__u64 replies;    /* backend replies sent to a client from XDP */
	__u64 slow;       /* requests handed to the slow path */
	__u64 no_backend; /* requests passed because no backend was live */
	__u64 no_route;   /* frames passed because the FIB gave no next hop */
	__u64 reflect_drop; /* requests dropped: from a port that could start a reply loop, or a backend's */
	__u64 spoofed_reply; /* a backend's "replies" to its client passed: not from the backend's side */
	__u64 flow_limit; /* of slow: this CPU had planted new_flows flows this second */
};

/* Per-CPU, per-backend counters. */
struct proxy_backend_stats {
	__u64 requests;
	__u64 replies;
	__u64 errors; /* of the replies, those starting with an error line */
};

/* Load-time configuration. */
const volatile __u16 port = 11211;
const volatile __u8 has_listen4 = 0;
const volatile __be32 listen4 = 0;
const volatile __u32 new_flows; /* flows each CPU may plant a second: lab/proxy always sets it (Config.NewFlows) */
const volatile __u8 has_listen6 = 0;
const volatile __u32 listen6[4] = {}; /* network order */
const volatile __u8 xdp_bytes = 0; /* bpf_xdp_load_bytes exists (5.18+): see pkt_copy_ctx */

/* Which of the two rings is current; the loader writes the other, then flips. */
volatile __u32 ring_slot = 0;

/* The next hops' generation: lab/proxy bumps it when the FIB may have
 * changed (a route, neighbour, link or address event, new backends), which
 * voids every cached hop. Never 0, which no hop holds. */
volatile __u32 fib_gen = 1;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct proxy_ring);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BACKENDS_MAX);
	__type(key, __u32);
	__type(value, struct proxy_backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BACKENDS_MAX * 2);
	__type(key, struct proxy_addr);
	__type(value, __u32);
} backend_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct proxy_flow);
	__type(value, __u32); /* the interface the backend is behind */
} flows SEC(".maps");

/* The FIB's answer for a request to one backend over one family, cached
 * per CPU (no CPU reads another's half-written entry): a routed request
 * reuses it instead of calling bpf_fib_lookup while the generation holds,
 * it comes in on the same device, it is no longer than one the FIB took on
 * that hop (so the MTU check stands), and HOP_USES uses are left (which
 * bounds how long a change nobody reported stays unseen under load). */
struct fib_hop {
	__u32 gen;     /* fib_gen it was looked up under; 0: empty */
	__u32 ingress; /* the device the request came in on */
	__u32 dst[4];  /* the backend's address it was looked up for (IPv4: dst[0]) */
	__u32 ifindex; /* out: the device towards the backend */
	__u16 max_len; /* the longest tot_len the FIB took */
	__u16 uses;    /* left before the FIB is asked again */
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
};

#define HOP_USES 4096

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BACKENDS_MAX * 2);
	__type(key, __u32);
	__type(value, struct fib_hop);
} hops SEC(".maps");

struct flow_budget {
	__u64 second; /* of bpf_ktime_get_ns */
	__u64 planted; /* in that second */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_budget);
} flow_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proxy_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BACKENDS_MAX);
	__type(key, __u32);
	__type(value, struct proxy_backend_stats);
} backend_stats SEC(".maps");

struct scratch {
	__u8 req[REQ_MAX + 8];
	__u32 req_len;
	__u32 copy_len; /* of which copied into req: the part parsed */
	__u32 line_end; /* index of the '\r' or '\n' ending the first line */
	__u32 data_start; /* index after that line's '\n' */
	__u32 pos;      /* tokenizer position */
	__u32 ts, tl;   /* current token */
	__u32 poff;     /* payload offset in the frame */
	__u32 num;
	__u32 hash;
	__u32 lo, hi; /* ring_lookup's search window */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

#define STAT_INC(field)                                                      \
	do {                                                                 \
		__u32 __z = 0;                                               \
		struct proxy_stats *__st = bpf_map_lookup_elem(&stats, &__z); \
		if (__st)                                                    \
			__st->field++;                                       \
	} while (0)

enum { STAT_REQUEST, STAT_REPLY, STAT_ERROR_REPLY };

static __always_inline void backend_stat(__u32 b, int what)
{
	struct proxy_backend_stats *st = bpf_map_lookup_elem(&backend_stats, &b);

	if (!st)
		return;
	if (what == STAT_REQUEST) {
		st->requests++;
		return;
	}
	st->replies++;
	if (what == STAT_ERROR_REPLY)
		st->errors++;
}

static __always_inline int has_prefix(const __u8 *p, const void *end, const char *w, __u32 n)
{
	if ((const void *)(p + n) > end)
		return 0;
#pragma unroll
	for (__u32 i = 0; i < n; i++)
		if (p[i] != w[i])
			return 0;
	return 1;
}

#define HAS_PREFIX(p, end, lit) has_prefix(p, end, lit, sizeof(lit) - 1)

/* Whether a reply datagram (at its frame header) opens with memcached's
 * ERROR, CLIENT_ERROR or SERVER_ERROR line (lab/memcache.IsErrorReply). */
static __always_inline int error_reply(const struct mc_frame *fr, const void *end)
{
	const __u8 *p = (const void *)(fr + 1);

	if ((const void *)(fr + 1) > end || fr->seq != 0)
		return 0; /* short, or not a reply's first datagram */
	return HAS_PREFIX(p, end, "ERROR\r\n") || HAS_PREFIX(p, end, "ERROR\n") || HAS_PREFIX(p, end, "CLIENT_ERROR ") ||
	       HAS_PREFIX(p, end, "SERVER_ERROR ");
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 k = 0;

	return bpf_map_lookup_elem(&scratch, &k);
}

/* ---- parsing (global functions: verified once) ---- */

/* Finds the first line: s->line_end and s->data_start. 0 ok, -1 no '\n'. */
__noinline int find_line(void)
{
	struct scratch *s = get_scratch();
	__u32 n, i, p;

	if (!s)
		return -1;
	n = RD(s->copy_len);
	/* Whole words without a '\n' first, then the word holding it. */
	for (i = 0; i < PAYLOAD_MAX / 8; i++) {
		if (i * 8 + 8 > n || HAS_BYTE(LD8(&s->req[(i * 8) & MASK]), '\n'))
			break;
	}
	WR(s->pos, i * 8);
	p = RD(s->pos);
	n = RD(s->copy_len);
	/* The first '\n' of the word there, if within what was copied. */
	i = first_flagged(HAS_BYTE(LD8(&s->req[p & MASK]), '\n'));
	if (p + i >= n)
		return -1;
	p += i;
	WR(s->data_start, p + 1);
	if (p > 0 && s->req[(p - 1) & MASK] == '\r')
		p--;
	WR(s->line_end, p);
	WR(s->pos, 0);
	return 0;
}

/* Next space-separated token of the first line into s->ts/s->tl; returns its
 * length (0 at the line's end), or TOK_BAD for a run of spaces or a token
 * longer than any key. */
__noinline int next_tok(void)
{
	struct scratch *s = get_scratch();

	if (!s)
		return TOK_BAD;
	return next_token(s->req, MASK, &s->pos, &s->line_end, &s->ts, &s->tl, KEY_MAX, TOK_BAD);
}

/* The current token as a key: 0 and its hash in s->hash (nutcracker's
 * fnv1a_32, bytes sign-extended as its char is), or -1 if it has a byte
 * memcached keys cannot hold (control, space, DEL). A word at a time, then
 * the last few bytes. */
__noinline int hash_tok(void)
{
	struct scratch *s = get_scratch();
	__u32 ts, tl, i, k, o, h = 2166136261U;

	if (!s)
		return -1;
	ts = RD(s->ts);
	tl = RD(s->tl);
	if (tl == 0 || tl > KEY_MAX)
		return -1;
	for (i = 0; i < KEY_MAX / 8; i++) {
		__u64 w;

		if (i * 8 + 8 > tl)
			break;
		w = LD8(&s->req[(ts + i * 8) & MASK]);
		if (HAS_LESS(w, 0x21) || HAS_BYTE(w, 0x7f))
			return -1;
#pragma unroll
		for (k = 0; k < 8; k++) {
			h ^= (__u32)(__s32)(__s8)(w >> (8 * k));
			h *= 16777619U;
		}
	}
	WR(s->hash, h);
	WR(s->num, i * 8);
	o = RD(s->num);
	h = RD(s->hash);
	ts = RD(s->ts);
	tl = RD(s->tl);
	for (k = 0; k < 8; k++) {
		__u8 c;

		if (o + k >= tl)
			break;
		c = s->req[(ts + o + k) & MASK];
		if (c <= ' ' || c == 0x7f)
			return -1;
		h ^= (__u32)(__s32)(__s8)c;
		h *= 16777619U;
	}
	WR(s->hash, h);
	return 0;
}

/* The backend owning s->hash: the first point at or after it, wrapping
 * (nutcracker's ketama_dispatch); -1 if no backend is live. lo and hi live
 * in the scratch map: as registers, each step's two outcomes would carry
 * different bounds forward and the verifier would walk 2^steps paths. */
__noinline int ring_lookup(void)
{
	struct scratch *s = get_scratch();
	struct proxy_ring *r;
	__u32 slot = ring_slot & 1, n, i;

	if (!s)
		return -1;
	r = bpf_map_lookup_elem(&rings, &slot);
	if (!r)
		return -1;
	n = RD(r->n);
	if (n == 0 || n > RING_MAX)
		return -1;
	i = r->bucket[(RD(s->hash) >> 16) & (BUCKETS - 1)];
	if (i != BUCKET_MIXED)
		return i;
	WR(s->lo, 0);
	WR(s->hi, n);
	for (i = 0; i < RING_STEPS + 1; i++) {
		__u32 lo = RD(s->lo), hi = RD(s->hi), mid;

		if (lo >= hi)
			break;
		mid = (lo + hi) / 2;
		if (r->hash[mid & RING_MASK] < RD(s->hash))
			WR(s->lo, mid + 1);
		else
			WR(s->hi, mid);
	}
	i = RD(s->lo);
	if (i >= n)
		i = 0;
	return r->backend[i & RING_MASK];
}

/* The current token as a decimal of at most 6 digits into s->num; -1 otherwise. */
__noinline int tok_num(void)
{
	struct scratch *s = get_scratch();
	__u64 v;

	if (!s)
		return -1;
	if (token_u64(s->req, MASK, &s->ts, &s->tl, 6, &v) < 0)
		return -1;
	WR(s->num, (__u32)v);
	return 0;
}

enum { K_NONE, K_GET, K_STORE, K_KEYED };

/* The backend for the request in the scratch buffer, or -1 to leave it to
 * the slow path. */
__noinline int route(void)
{
	struct scratch *s = get_scratch();
	int kind = K_NONE, b, first = -1;
	__u32 k;

	if (!s)
		return -1;
	if (find_line() < 0)
		return -1;
	if (next_tok() >= TOK_BAD || RD(s->ts) != 0)
		return -1;
	if (TOK_IS(s, "get") || TOK_IS(s, "gets"))
		kind = K_GET;
	else if (TOK_IS(s, "set") || TOK_IS(s, "add") || TOK_IS(s, "replace") ||
		 TOK_IS(s, "append") || TOK_IS(s, "prepend") || TOK_IS(s, "cas"))
		kind = K_STORE;
	else if (TOK_IS(s, "delete") || TOK_IS(s, "incr") || TOK_IS(s, "decr") || TOK_IS(s, "touch"))
		kind = K_KEYED;
	if (kind == K_NONE)
		return -1;

	if (kind == K_GET) {
		for (k = 0; k < KEYS_MAX; k++) {
			int n = next_tok();

			if (n == 0)
				break;
			if (n >= TOK_BAD || hash_tok() < 0)
				return -1;
			b = ring_lookup();
			if (b < 0)
				return -1;
			if (first >= 0 && b != first)
				return -1; /* spans backends: the slow path splits it */
			first = b;
		}
		if (k == KEYS_MAX && next_tok() != 0)
			return -1;
		if (first < 0)
			return -1;
		/* One request per datagram: nothing after the line. */
		if (RD(s->data_start) != RD(s->req_len))
			return -1;
		return first;
	}

	if (next_tok() >= TOK_BAD || RD(s->tl) == 0 || hash_tok() < 0)
		return -1;
	first = ring_lookup();
	if (first < 0)
		return -1;
	if (kind == K_KEYED) {
		if (RD(s->data_start) != RD(s->req_len))
			return -1;
		return first;
	}
	/* Storage: <flags> <exptime> <bytes> (cas: then <unique>); the data
	 * block and its \r\n must end the datagram. */
	if (next_tok() >= TOK_BAD || RD(s->tl) == 0)
		return -1;
	if (next_tok() >= TOK_BAD || RD(s->tl) == 0)
		return -1;
	if (next_tok() >= TOK_BAD || tok_num() < 0)
		return -1;
	if (RD(s->data_start) + RD(s->num) + 2 != RD(s->req_len))
		return -1;
	return first;
}

/* ---- packet in, packet out ---- */

/* Whether this CPU may plant one more flow this second (see the top). */
static __always_inline int flow_admit(void)
{
	__u32 z = 0;
	struct flow_budget *b = bpf_map_lookup_elem(&flow_budget, &z);
	__u64 now = bpf_ktime_get_ns() / 1000000000;

	if (!b)
		return 0;
	if (b->second != now) {
		b->second = now;
		b->planted = 0;
	}
	if (b->planted >= new_flows)
		return 0;
	b->planted++;
	return 1;
}

/* The FIB's next hop towards params' destination, from the ingress device.
 * 0 ok (ifindex and MACs filled in), -1 pass to the stack. */
static __always_inline int next_hop(struct xdp_md *ctx, struct bpf_fib_lookup *fib)
{
	fib->ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), 0) != BPF_FIB_LKUP_RET_SUCCESS) {
		STAT_INC(no_route);
		return -1;
	}
	return 0;
}

/* The next hop towards backend bi over v6 for a request of fib's tot_len,
 * from the cache (hops) or else the FIB, which then fills the cache. 0 ok
 * (fib's ifindex and MACs filled in), -1 pass to the stack. */
static __always_inline int next_hop_cached(struct xdp_md *ctx, struct bpf_fib_lookup *fib, __u32 bi, int v6)
{
	__u32 k = (bi & (BACKENDS_MAX - 1)) * 2 + !!v6, gen = fib_gen;
	struct fib_hop *h = bpf_map_lookup_elem(&hops, &k);
	int same = 0;

	/* The same question as the cached answer's (a backend's address may
	 * change under its index before the generation does). */
	if (h && h->gen == gen && h->ingress == ctx->ingress_ifindex) {
		if (!v6)
			same = h->dst[0] == fib->ipv4_dst;
		else
			same = h->dst[0] == fib->ipv6_dst[0] && h->dst[1] == fib->ipv6_dst[1] &&
			       h->dst[2] == fib->ipv6_dst[2] && h->dst[3] == fib->ipv6_dst[3];
	}
	if (same && fib->tot_len <= h->max_len && h->uses) {
		h->uses--;
		fib->ifindex = h->ifindex;
		__builtin_memcpy(fib->smac, h->smac, ETH_ALEN);
		__builtin_memcpy(fib->dmac, h->dmac, ETH_ALEN);
		return 0;
	}
	if (next_hop(ctx, fib) < 0)
		return -1;
	if (h) {
		__u16 max = fib->tot_len;

		/* The same hop as cached: the MTU check now covers the longer
		 * of the two lengths. */
		if (same && h->ifindex == fib->ifindex && h->max_len > max)
			max = h->max_len;
		h->gen = gen;
		h->ingress = ctx->ingress_ifindex;
		h->ifindex = fib->ifindex;
		if (!v6) {
			h->dst[0] = fib->ipv4_dst;
		} else {
			h->dst[0] = fib->ipv6_dst[0];
			h->dst[1] = fib->ipv6_dst[1];
			h->dst[2] = fib->ipv6_dst[2];
			h->dst[3] = fib->ipv6_dst[3];
		}
		h->max_len = max;
		h->uses = HOP_USES;
		__builtin_memcpy(h->smac, fib->smac, ETH_ALEN);
		__builtin_memcpy(h->dmac, fib->dmac, ETH_ALEN);
	}
	return 0;
}

static __always_inline int send(struct xdp_md *ctx, struct ethhdr *eth, struct bpf_fib_lookup *fib)
{
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

SEC("xdp")
int proxy_xdp(struct xdp_md *ctx)
{
	struct pkt p;
	struct proxy_backend *be;
	struct proxy_addr pa = {};
	struct proxy_flow fl = {};
	struct bpf_fib_lookup fib = {};
	struct scratch *s;
	__u32 plen, bi, *bip, *dev;
	int b, n, to_us;

	if (pkt_udp(&p, ctx) < 0 || !pkt_rx_ok(&p))
		return XDP_PASS;
	if (!p.v6)
		to_us = has_listen4 && p.ip->daddr == listen4;
	else
		to_us = has_listen6 && p.ip6->daddr.in6_u.u6_addr32[0] == listen6[0] &&
			p.ip6->daddr.in6_u.u6_addr32[1] == listen6[1] &&
			p.ip6->daddr.in6_u.u6_addr32[2] == listen6[2] &&
			p.ip6->daddr.in6_u.u6_addr32[3] == listen6[3];

	/* Is the source a backend's serving address and port? */
	pa.port = p.udp->source;
	pkt_addr16(&p, pa.addr, 0);
	bip = bpf_map_lookup_elem(&backend_addrs, &pa);

	if (!(to_us && p.udp->dest == bpf_htons(port)))
		goto reply;

	/* ---- a request ---- */
	STAT_INC(requests);
	/* Forwarded, it would make a backend answer the source: never a
	 * well-known port, nor memcached's or the proxy's own, nor a
	 * backend's own address and port, so one spoofed datagram cannot set
	 * servers answering each other (lab/memcache.Unanswerable, which the
	 * slow path applies, with the backends). */
	if (bip || mc_loop_port(p.udp->source, port)) {
		STAT_INC(reflect_drop);
		return XDP_DROP;
	}
	n = pkt_payload_len(&p, sizeof(struct mc_frame), PAYLOAD_MAX);
	if (n < 0)
		goto slow;
	plen = n;
	{
		struct mc_frame *fr = (void *)(p.udp + 1);

		if ((void *)(fr + 1) > p.data_end || !mc_frame_single(fr))
			goto slow;
	}
	s = get_scratch();
	if (!s)
		goto slow;
	WR(s->req_len, plen);
	{
		/* Only a get's line can be long; of anything else the data
		 * block is never read, so it stays in the packet. */
		char *c = (void *)(p.udp + 1) + sizeof(struct mc_frame);

		if ((void *)(c + 4) > p.data_end)
			goto slow;
		if (plen > LINE_COPY && !(c[0] == 'g' && c[1] == 'e' && c[2] == 't' && (c[3] == ' ' || c[3] == 's')))
			plen = LINE_COPY;
	}
	WR(s->copy_len, plen);
	if (pkt_copy_ctx(ctx, xdp_bytes, p.data, p.data_end, p.hoff + sizeof(*p.udp) + sizeof(struct mc_frame), s->req, MASK,
		     &s->copy_len, &s->poff, 0) < 0)
		goto slow;
	b = route();
	if (b < 0) {
		__u32 slot = ring_slot & 1;
		struct proxy_ring *r = bpf_map_lookup_elem(&rings, &slot);

		if (r && r->n == 0)
			STAT_INC(no_backend);
		goto slow;
	}
	bi = (__u32)b;
	be = bpf_map_lookup_elem(&backends, &bi);
	if (!be)
		goto slow;

	/* Ask the FIB before touching the frame: a pass must leave it as it came. */
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = p.udp->source;
	fib.dport = be->port;
	if (!p.v6) {
		if (!be->has4 || p.ip->ttl <= 1)
			goto slow;
		fib.family = AF_INET;
		fib.tos = p.ip->tos;
		fib.tot_len = bpf_ntohs(p.ip->tot_len);
		fib.ipv4_src = p.ip->saddr;
		fib.ipv4_dst = be->addr4;
	} else {
		if (!be->has6 || p.ip6->hop_limit <= 1)
			goto slow;
		fib.family = AF_INET6;
		fib.tot_len = bpf_ntohs(p.ip6->payload_len) + sizeof(*p.ip6);
		__builtin_memcpy(fib.ipv6_src, &p.ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, be->addr6, 16);
	}
	if (next_hop_cached(ctx, &fib, bi, p.v6) < 0)
		goto slow;

	/* Remember the client, so this backend's replies to it come back
	 * through us, and where the backend is; look first, as most
	 * requests come from known clients. */
	__builtin_memcpy(fl.addr, pa.addr, 16);
	fl.port = p.udp->source;
	fl.backend = bi;
	dev = bpf_map_lookup_elem(&flows, &fl);
	if (!dev) {
		if (!flow_admit()) {
			STAT_INC(flow_limit);
			goto slow;
		}
		bpf_map_update_elem(&flows, &fl, &fib.ifindex, BPF_ANY);
	} else if (*dev != fib.ifindex) {
		*dev = fib.ifindex; /* the route changed */
	}
	if (!p.v6)
		pkt_rewrite4(p.ip, p.udp, &p.ip->daddr, be->addr4, &p.udp->dest, be->port);
	else
		pkt_rewrite6(p.ip6, p.udp, p.ip6->daddr.in6_u.u6_addr32, (const __u32 *)be->addr6, &p.udp->dest, be->port);
	STAT_INC(forwarded);
	backend_stat(bi, STAT_REQUEST);
	return send(ctx, p.eth, &fib);

reply:
	/* ---- perhaps a backend's reply to a client ---- */
	if (!bip)
		return XDP_PASS;
	bi = *bip;
	fl.port = p.udp->dest;
	fl.backend = bi;
	if (!p.v6) {
		if (!has_listen4 || p.ip->ttl <= 1)
			return XDP_PASS;
	} else {
		if (!has_listen6 || p.ip6->hop_limit <= 1)
			return XDP_PASS;
	}
	pkt_addr16(&p, fl.addr, 1);
	dev = bpf_map_lookup_elem(&flows, &fl);
	if (!dev)
		return XDP_PASS; /* not a client of ours: someone talking to the backend directly */
	if (*dev != ctx->ingress_ifindex) {
		STAT_INC(spoofed_reply);
		return XDP_PASS;
	}

	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = bpf_htons(port);
	fib.dport = p.udp->dest;
	if (!p.v6) {
		fib.family = AF_INET;
		fib.tos = p.ip->tos;
		fib.tot_len = bpf_ntohs(p.ip->tot_len);
		fib.ipv4_src = listen4;
		fib.ipv4_dst = p.ip->daddr;
	} else {
		fib.family = AF_INET6;
		fib.tot_len = bpf_ntohs(p.ip6->payload_len) + sizeof(*p.ip6);
		for (int i = 0; i < 4; i++)
			fib.ipv6_src[i] = listen6[i];
		__builtin_memcpy(fib.ipv6_dst, &p.ip6->daddr, 16);
	}
	if (next_hop(ctx, &fib) < 0)
		return XDP_PASS;
	if (!p.v6) {
		pkt_rewrite4(p.ip, p.udp, &p.ip->saddr, listen4, &p.udp->source, bpf_htons(port));
	} else {
		__u32 l6[4] = {listen6[0], listen6[1], listen6[2], listen6[3]};

		pkt_rewrite6(p.ip6, p.udp, p.ip6->saddr.in6_u.u6_addr32, l6, &p.udp->source, bpf_htons(port));
	}
	STAT_INC(replies);
	backend_stat(bi, error_reply((void *)(p.udp + 1), p.data_end) ? STAT_ERROR_REPLY : STAT_REPLY);
	return send(ctx, p.eth, &fib);

slow:
	STAT_INC(slow);
	return XDP_PASS;
}

/* Make the limits and XDP's actions visible in BTF for bpf2go's Go constants. */
const enum proxy_limit *unused_proxy_limit __attribute__((unused));
const enum xdp_action *unused_xdp_action __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
