/* The packet plumbing the XDP programs (bpf/kv.bpf.c, bpf/proxy.bpf.c) share:
 * a parse cursor over Ethernet -> IPv4/IPv6 -> UDP, frame.h's receive checks
 * over it, addresses as 16-byte keys, the UDP length bounded for the
 * verifier, the cursor again after the frame moved (pkt_reload), the
 * datagram turned back to its sender in place (pkt_turn), and the payload's
 * copy between the frame and a scratch buffer; for forwarding, one address
 * and port rewritten with the checksums following (pkt_rewrite4/6).
 *
 * Verifier shape: every helper is inlined, and the cursor is a local of the
 * program's entry, which clang keeps in registers; each packet pointer is
 * checked against data_end before it is used, and v6 is a known constant on
 * each path, so the verifier never mixes an IPv4 path with an IPv6 one. */
#ifndef XDPLAB_PKT_H
#define XDPLAB_PKT_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "frame.h"
#include "scan.h"

/* The largest UDP payload the programs take: a 1500-byte MTU. */
#define PAYLOAD_MAX 1480

/* A UDP datagram in the frame. */
struct pkt {
	void *data, *data_end;
	struct ethhdr *eth;
	/* Both point after the Ethernet header; v6 says which is valid. A
	 * known-constant flag, unlike a null pointer check on a packet
	 * pointer, lets the verifier skip the impossible mixes. */
	struct iphdr *ip;
	struct ipv6hdr *ip6;
	struct udphdr *udp;
	__u32 hoff; /* the UDP header's offset: Ethernet and IP header bytes */
	int v6;
};

/* p's pointers from ctx, none of them checked yet. */
static __always_inline void pkt_ptrs(struct pkt *p, struct xdp_md *ctx)
{
	p->data = (void *)(long)ctx->data;
	p->data_end = (void *)(long)ctx->data_end;
	p->eth = p->data;
	p->ip = (void *)(p->eth + 1);
	p->ip6 = (void *)(p->eth + 1);
}

/* Fills p for a UDP datagram over IPv4 (no options, not a fragment: the
 * stack reassembles those) or IPv6 (UDP the next header): 0, with eth, ip or
 * ip6 and udp bounds-checked; -1 for anything else, which the caller passes. */
static __always_inline int pkt_udp(struct pkt *p, struct xdp_md *ctx)
{
	pkt_ptrs(p, ctx);
	if ((void *)(p->eth + 1) > p->data_end)
		return -1;
	if (p->eth->h_proto == bpf_htons(ETH_P_IP)) {
		if ((void *)(p->ip + 1) > p->data_end || p->ip->ihl != 5 || p->ip->protocol != IPPROTO_UDP)
			return -1;
		if (p->ip->frag_off & bpf_htons(0x3fff))
			return -1;
		p->hoff = sizeof(struct ethhdr) + sizeof(struct iphdr);
		p->v6 = 0;
	} else if (p->eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		if ((void *)(p->ip6 + 1) > p->data_end || p->ip6->nexthdr != IPPROTO_UDP)
			return -1;
		p->hoff = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
		p->v6 = 1;
	} else {
		return -1;
	}
	p->udp = p->data + p->hoff;
	if ((void *)(p->udp + 1) > p->data_end)
		return -1;
	return 0;
}

/* After a helper moved the frame (bpf_xdp_adjust_tail/head), p's pointers
 * anew, with the Ethernet and IP headers (of the family p->v6 says) checked
 * again: 0, or -1 when the frame no longer holds them. udp is not checked. */
static __always_inline int pkt_reload(struct pkt *p, struct xdp_md *ctx)
{
	pkt_ptrs(p, ctx);
	p->udp = p->data + p->hoff;
	if ((void *)(p->eth + 1) > p->data_end)
		return -1;
	if (!p->v6)
		return (void *)(p->ip + 1) > p->data_end ? -1 : 0;
	return (void *)(p->ip6 + 1) > p->data_end ? -1 : 0;
}

/* Whether the kernel would take the datagram as the host's (frame.h): a
 * unicast frame, a well-formed IP header whose length the frame holds, a UDP
 * length within it. */
static __always_inline int pkt_rx_ok(const struct pkt *p)
{
	int ipl;

	if (!frame_unicast(p->eth))
		return 0;
	ipl = p->v6 ? frame_ipv6(p->ip6, p->data_end) : frame_ipv4(p->ip, p->data_end);
	return ipl >= 0 && frame_udp_ok(p->udp, ipl);
}

/* An IPv4 address as a 16-byte key: ::ffff:a.b.c.d. */
static __always_inline void addr16_v4(__u8 *out, __be32 a)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &a, 4);
}

/* The datagram's source (dst 0) or destination (dst 1) address as a 16-byte
 * key, IPv4 as ::ffff:a.b.c.d. */
static __always_inline void pkt_addr16(const struct pkt *p, __u8 *out, int dst)
{
	if (!p->v6)
		addr16_v4(out, dst ? p->ip->daddr : p->ip->saddr);
	else
		__builtin_memcpy(out, dst ? &p->ip6->daddr : &p->ip6->saddr, 16);
}

/* The UDP payload's length past an application header of hdr bytes (a
 * constant), when the datagram holds that header and at most max bytes
 * after it, and the frame holds the datagram; -1 otherwise. */
static __always_inline int pkt_payload_len(const struct pkt *p, __u32 hdr, __u32 max)
{
	__u32 len = bpf_ntohs(p->udp->len);

	/* 5.10 leaves a byte swap's result unbounded: bound it before the
	 * pointer math (the barrier keeps clang from dropping the mask). */
	PIN(len);
	len &= 0xffff;
	if (len < sizeof(struct udphdr) + hdr || len > sizeof(struct udphdr) + hdr + max ||
	    p->data + p->hoff + len > p->data_end)
		return -1;
	return len - sizeof(struct udphdr) - hdr;
}

/* Turns the datagram p holds (its headers bounds-checked, udp's too) back
 * to its sender, in place, as a UDP datagram of ulen bytes, header
 * included: MAC and IP addresses and UDP ports swapped, the IP length set,
 * a hop limit of 64, IPv4's header checksum made anew, udp->len set and
 * udp->check zeroed. Returns the pseudo-header's ones' complement sum
 * (frame_sum16), from which the caller finishes the UDP checksum over the
 * bytes it writes. */
static __always_inline __u64 pkt_turn(struct pkt *p, __u16 ulen)
{
	struct ethhdr *eth = p->eth;
	struct udphdr *udp = p->udp;
	__u8 mac[ETH_ALEN];
	__u64 sum;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	if (!p->v6) {
		struct iphdr *ip = p->ip;
		__be32 a;
		struct {
			__be32 saddr, daddr;
			__u8 zero, proto;
			__be16 len;
		} ph;

		a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		ip->tot_len = bpf_htons(sizeof(*ip) + ulen);
		ip->ttl = 64;
		ip->check = 0;
		ip->check = frame_fold(frame_sum16(ip, sizeof(*ip)));
		ph.saddr = ip->saddr;
		ph.daddr = ip->daddr;
		ph.zero = 0;
		ph.proto = IPPROTO_UDP;
		ph.len = bpf_htons(ulen);
		sum = frame_sum16(&ph, sizeof(ph));
	} else {
		struct ipv6hdr *ip6 = p->ip6;
		struct in6_addr a;
		struct {
			struct in6_addr saddr, daddr;
			__be32 len;
			__u8 zero[3], nh;
		} ph = {};

		a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
		ip6->payload_len = bpf_htons(ulen);
		ip6->hop_limit = 64;
		ph.saddr = ip6->saddr;
		ph.daddr = ip6->daddr;
		ph.len = bpf_htonl(ulen);
		ph.nh = IPPROTO_UDP;
		sum = frame_sum16(&ph, sizeof(ph));
	}
	{
		__be16 port = udp->source;

		udp->source = udp->dest;
		udp->dest = port;
	}
	udp->len = bpf_htons(ulen);
	udp->check = 0;
	return sum;
}

/* Rewrites the UDP checksum for one address (4 or 16 bytes) and the port
 * pair changing; 0 (no checksum, IPv4 only) stays 0. */
static __always_inline void pkt_udp_csum(struct udphdr *udp, __u32 *from, __u32 *to, __u32 size)
{
	__u64 sum;

	if (!udp->check)
		return;
	sum = bpf_csum_diff(from, size, to, size, ~(__u32)udp->check & 0xffff);
	udp->check = frame_fold(sum) ?: 0xffff;
}

/* Forwards a frame with one IPv4 address of its header (*addr: the source
 * or the destination) and one UDP port (*port) rewritten: both checksums
 * follow, and it spends a hop. */
static __always_inline void pkt_rewrite4(struct iphdr *ip, struct udphdr *udp, __be32 *addr, __be32 new_addr,
					 __be16 *port, __be16 new_port)
{
	__u32 from[2], to[2];

	from[0] = *addr;
	__builtin_memcpy(&from[1], &udp->source, 4); /* both ports */
	*addr = new_addr;
	*port = new_port;
	to[0] = *addr;
	__builtin_memcpy(&to[1], &udp->source, 4);
	pkt_udp_csum(udp, from, to, sizeof(from));
	ip->ttl--;
	ip->check = 0;
	ip->check = frame_fold(bpf_csum_diff(0, 0, (void *)ip, sizeof(*ip), 0));
}

/* pkt_rewrite4 for IPv6 (which has no header checksum). */
static __always_inline void pkt_rewrite6(struct ipv6hdr *ip6, struct udphdr *udp, __u32 *addr, const __u32 *new_addr,
					 __be16 *port, __be16 new_port)
{
	__u32 from[5], to[5];

	__builtin_memcpy(from, addr, 16);
	__builtin_memcpy(&from[4], &udp->source, 4);
	__builtin_memcpy(addr, new_addr, 16);
	*port = new_port;
	__builtin_memcpy(to, addr, 16);
	__builtin_memcpy(&to[4], &udp->source, 4);
	pkt_udp_csum(udp, from, to, sizeof(from));
	ip6->hop_limit--;
}

/* Copies *len bytes (0..PAYLOAD_MAX) between the frame at off and buf (a
 * scratch buffer of mask + 1 bytes, a power of two, plus 8): into buf, or
 * out of it when out is 1. 0, or -1 when the frame is too short.
 *
 * The loops read their length from the caller's scratch map (len), not a
 * register, so the many ways a loop can end do not multiply the verifier's
 * states. The offset, too, goes through the scratch (poff) and comes back
 * as a bounded unknown: a constant offset would tie every bounds check to
 * the frame's own pointers, and each loop exit would carry a different
 * packet range forward. */
static __always_inline int pkt_copy(void *data, void *data_end, __u32 off, __u8 *buf, __u32 mask,
				    __u32 *len, __u32 *poff, int out)
{
	__u32 i, o;

	WR(*poff, off);
	off = RD(*poff) & 127;
	for (i = 0; i < PAYLOAD_MAX / 8; i++) {
		void *p;

		o = i * 8;
		if (o + 8 > RD(*len))
			break;
		p = data + off + o;
		PIN(p);
		if (p + 8 > data_end)
			return -1;
		if (out)
			*(__u64 *)p = *(__u64 *)&buf[o];
		else
			*(__u64 *)&buf[o] = *(__u64 *)p;
	}
	o = RD(*len) & (mask & ~7U);
	for (i = 0; i < 7; i++) {
		__u8 *p = data + off + o + i;

		PIN(p);
		if (o + i >= RD(*len))
			break;
		if ((void *)(p + 1) > data_end)
			return -1;
		if (out)
			*p = buf[(o + i) & mask];
		else
			buf[(o + i) & mask] = *p;
	}
	return 0;
}

/* Copies shorter than this stay in the loops even where the helpers are:
 * a helper call costs about what 16 words of loop do (measured on the
 * host: the helpers saved ~80 ns on a GET of a 1000-byte value and cost
 * ~15 ns on a 22-byte request and 130-byte reply). */
#define PKT_COPY_HELPER_MIN 128

/* pkt_copy through bpf_xdp_load_bytes/bpf_xdp_store_bytes when fast (a
 * load-time constant: the program's probe for the helpers, 5.18+) and the
 * copy is long: one call instead of the loops. The verifier walks only the
 * branch the constant leaves, so older kernels never see the helpers. */
static __always_inline int pkt_copy_ctx(struct xdp_md *ctx, int fast, void *data, void *data_end, __u32 off,
					__u8 *buf, __u32 mask, __u32 *len, __u32 *poff, int out)
{
	if (fast) {
		__u32 n = RD(*len);

		if (n > PAYLOAD_MAX)
			return -1;
		if (n >= PKT_COPY_HELPER_MIN) {
			if (out)
				return bpf_xdp_store_bytes(ctx, off, buf, n) ? -1 : 0;
			return bpf_xdp_load_bytes(ctx, off, buf, n) ? -1 : 0;
		}
	}
	return pkt_copy(data, data_end, off, buf, mask, len, poff, out);
}

#endif
