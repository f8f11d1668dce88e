/* The receive checks an XDP program makes before it acts on a frame: those
 * of the kernel's own receive path (eth_type_trans, ip_rcv_core, ipv6_rcv,
 * udp_rcv) that decide a frame is not this host's or is malformed. A program
 * that answered or forwarded such a frame would act on traffic the host
 * never takes; it must pass it untouched, for the kernel to drop and count.
 * The UDP checksum is left to the receiver: a rewrite keeps it wrong.
 * Shared by the XDP programs (bpf/kv.bpf.c, bpf/proxy.bpf.c). Each helper
 * takes a header the caller has bounds-checked. */
#ifndef XDPLAB_FRAME_H
#define XDPLAB_FRAME_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "scan.h"

/* Ones' complement sum of n (constant, even) bytes as raw 16-bit words:
 * cheaper inline than a bpf_csum_diff call for headers. */
static __always_inline __u64 frame_sum16(const void *p, const __u32 n)
{
	__u64 sum = 0;

#pragma unroll
	for (__u32 i = 0; i < n / 2; i++)
		sum += ((const __u16 *)p)[i];
	return sum;
}

/* A sum folded to 16 bits and complemented: a checksum field's value, or
 * 0 over bytes that carry their right checksum. */
static __always_inline __u16 frame_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Folds a wide sum to 32 bits without losing carries, as a csum_diff seed. */
static __always_inline __u32 frame_fold32(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)((sum & 0xffffffff) + (sum >> 32));
}

/* Whether the frame is for one station: the group bit marks multicast and
 * broadcast, which are nobody's requests or replies in particular. */
static __always_inline int frame_unicast(const struct ethhdr *eth)
{
	return !(eth->h_dest[0] & 1);
}

/* The payload length of an IPv4 packet the kernel takes, or -1: version 4,
 * a right header checksum, a total length covering the header and within
 * the frame (shorter is padding, which the kernel trims). Options (ihl > 5)
 * count as -1 too: no program here parses them, and passing is right. */
static __always_inline int frame_ipv4(const struct iphdr *ip, const void *data_end)
{
	__u32 tot = bpf_ntohs(ip->tot_len);

	if (ip->version != 4 || ip->ihl != 5 || frame_fold(frame_sum16(ip, sizeof(*ip))) != 0)
		return -1;
	PIN(tot); /* 5.10 leaves a byte swap's result unbounded */
	tot &= 0xffff;
	if (tot < sizeof(*ip) || (const void *)ip + tot > data_end)
		return -1;
	return tot - sizeof(*ip);
}

/* The payload length of an IPv6 packet the kernel takes, or -1: version 6
 * and a payload length within the frame. */
static __always_inline int frame_ipv6(const struct ipv6hdr *ip6, const void *data_end)
{
	__u32 len = bpf_ntohs(ip6->payload_len);

	if (ip6->version != 6)
		return -1;
	PIN(len);
	len &= 0xffff;
	if ((const void *)(ip6 + 1) + len > data_end)
		return -1;
	return len;
}

/* Whether a UDP length is one the kernel takes from an IP payload of
 * ip_len bytes: the header at least, the payload at most (a shorter
 * datagram's excess is trimmed). */
static __always_inline int frame_udp_ok(const struct udphdr *udp, __u32 ip_len)
{
	__u32 len = bpf_ntohs(udp->len);

	return len >= sizeof(*udp) && len <= ip_len;
}

#endif
