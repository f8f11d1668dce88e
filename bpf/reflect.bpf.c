// SPDX-License-Identifier: GPL-2.0
/* The reflector: the benchmarks' ceiling. An XDP program that answers every
 * memcached UDP GET of the benchmark's shape ("get <key>\r\n", one datagram,
 * keys of key_len bytes) with a fixed reply: the bytes a store GET hit of the
 * benchmark's value gives ("VALUE <key> 0 <n>\r\n<value>\r\nEND\r\n", the
 * request's key copied in), and every "set" with "STORED\r\n". It keeps no
 * state and looks nothing up, so the store's GETs/s over the reflector's,
 * measured with one client in one run, says how near the store runs to what
 * the client and the path (veth, XDP_TX) allow. lab/bench/reflector loads it
 * and fills the reply in from Go.
 *
 * It answers only datagrams to the lab's own addresses (198.18.0.0/15,
 * fd00::/8) on its port, that the kernel would take as the host's
 * (frame.h), and not from a port a reply loop could run through
 * (mcframe.h); everything else passes untouched.
 *
 * The reply's template (frame header and key zeroed) sits in a per-CPU
 * scratch map that Go fills once; per request the program writes the frame
 * header and the key into it, copies it out (pkt_copy) and completes the UDP
 * checksum from the template's sum, which Go computes. */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "pkt.h"
#include "mcframe.h"

#define RF_BUF 2048 /* scratch size, a power of two so offsets can be masked */
#define RF_MASK (RF_BUF - 1)
#define RF_KEY_MAX 250 /* memcached's key limit */
#define RF_KEY_OFF 14  /* the key's offset in the reply: frame header, "VALUE " */

/* Set from Go before loading. */
const volatile __u16 port = 11211;
const volatile __u32 key_len = 16;   /* the keys of the GETs it answers */
const volatile __u32 reply_len = 0;  /* the GET reply's payload, frame header included */
const volatile __u32 reply_sum = 0;  /* its template's 16-bit word sum (frame header and key zero) */

/* Per-CPU: counters, then the GET reply's template. */
struct rf_scratch {
	__u64 gets, sets, passed;
	__u32 len, off; /* pkt_copy's length and offset, kept in the map */
	__u8 buf[RF_BUF + 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rf_scratch);
} scratch SEC(".maps");

/* Whether the datagram is to one of the lab's own addresses. */
static __always_inline int lab_addr(const struct pkt *p)
{
	if (!p->v6)
		return (p->ip->daddr & bpf_htonl(0xfffe0000)) == bpf_htonl(0xc6120000);
	return p->ip6->daddr.in6_u.u6_addr8[0] == 0xfd;
}

static const char stored[8] = "STORED\r\n";

SEC("xdp")
int reflect_xdp(struct xdp_md *ctx)
{
	struct rf_scratch *s;
	struct mc_frame *fr;
	struct pkt p;
	__u8 *cmd;
	__u64 sum;
	__u32 k = 0, i;
	int plen, get;

	if (pkt_udp(&p, ctx) < 0 || p.udp->dest != bpf_htons(port) || !lab_addr(&p) || !pkt_rx_ok(&p) ||
	    mc_loop_port(p.udp->source, port))
		return XDP_PASS;
	s = bpf_map_lookup_elem(&scratch, &k);
	if (!s)
		return XDP_PASS;
	plen = pkt_payload_len(&p, sizeof(*fr), PAYLOAD_MAX);
	fr = (void *)(p.udp + 1);
	cmd = (void *)(fr + 1);
	if (plen < 4 || (void *)(cmd + 4) > p.data_end || !mc_frame_single(fr) || cmd[1] != 'e' || cmd[2] != 't' ||
	    cmd[3] != ' ')
		goto pass;
	get = cmd[0] == 'g';
	if (get) {
		__u8 *eol = cmd + 4 + key_len;

		if (plen != 4 + key_len + 2 || (void *)(eol + 2) > p.data_end || eol[0] != '\r' || eol[1] != '\n')
			goto pass;
		for (i = 0; i < RF_KEY_MAX; i++) {
			__u8 *b = cmd + 4 + i;

			if (i >= key_len)
				break;
			if ((void *)(b + 1) > p.data_end || *b <= ' ' || *b == 0x7f)
				goto pass; /* not one key */
			s->buf[(RF_KEY_OFF + i) & RF_MASK] = *b;
		}
	} else if (cmd[0] != 's') {
		goto pass;
	}

	{
		__be16 id = fr->id;
		__u32 rlen = get ? reply_len : sizeof(*fr) + sizeof(stored);

		int delta = (int)rlen - (int)(sizeof(*fr) + plen);

		if (bpf_xdp_adjust_tail(ctx, delta)) {
			/* A veth leaves little tailroom but always 256 bytes of
			 * headroom: grow at the head and move the headers
			 * there, front to back (they move to lower addresses). */
			__u32 hlen = p.hoff + sizeof(struct udphdr), d;
			void *data, *data_end;

			if (delta <= 0 || delta > 256 || bpf_xdp_adjust_head(ctx, -delta))
				goto pass;
			d = delta & 511;
			data = (void *)(long)ctx->data;
			data_end = (void *)(long)ctx->data_end;
			for (i = 0; i < 8; i++) {
				void *to = data + i * 8, *from = to + d;

				if (i * 8 >= hlen)
					break;
				PIN(from);
				if (to + 8 > data_end || from + 8 > data_end)
					return XDP_DROP;
				CP8(to, from);
			}
		}
		if (pkt_reload(&p, ctx) < 0)
			return XDP_DROP;
		fr = (void *)(p.udp + 1);
		cmd = (void *)(fr + 1);
		if ((void *)(cmd + sizeof(stored)) > p.data_end)
			return XDP_DROP;
		sum = pkt_turn(&p, sizeof(struct udphdr) + rlen);
		fr->id = id;
		fr->seq = 0;
		fr->total = bpf_htons(1);
		fr->reserved = 0;
		if (!get) {
			__builtin_memcpy(cmd, stored, sizeof(stored));
			sum += frame_sum16(p.udp, sizeof(struct udphdr) + sizeof(*fr) + sizeof(stored));
			p.udp->check = frame_fold(sum) ?: 0xffff;
			s->sets++;
			return XDP_TX;
		}
		/* The frame header and the key, as the template leaves them out. */
		sum += frame_sum16(p.udp, sizeof(struct udphdr) + sizeof(*fr));
		for (i = 0; i < RF_KEY_MAX; i += 2) {
			__u16 w;

			if (i >= key_len)
				break;
			w = s->buf[(RF_KEY_OFF + i) & RF_MASK];
			if (i + 1 < key_len)
				w |= (__u16)s->buf[(RF_KEY_OFF + i + 1) & RF_MASK] << 8;
			sum += w;
		}
		sum += reply_sum;
		/* The frame header is in the packet already: copy from the
		 * template's "VALUE " on. */
		WR(s->len, rlen - sizeof(*fr));
		if (pkt_copy(p.data, p.data_end, p.hoff + sizeof(struct udphdr) + sizeof(*fr), s->buf + sizeof(*fr),
			     RF_MASK, &s->len, &s->off, 1) < 0)
			return XDP_DROP;
		p.udp->check = frame_fold(sum) ?: 0xffff;
		s->gets++;
		return XDP_TX;
	}
pass:
	s->passed++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
