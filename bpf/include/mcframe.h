/* memcached's UDP frame header, which opens every datagram of the text
 * protocol over UDP (lab/memcache's frame): request id, sequence number,
 * datagram count, reserved. Shared by the XDP programs (bpf/kv.bpf.c,
 * bpf/proxy.bpf.c). */
#ifndef XDPLAB_MCFRAME_H
#define XDPLAB_MCFRAME_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

struct mc_frame {
	__be16 id, seq, total, reserved;
};

/* Whether fr (bounds-checked by the caller) opens a message of one
 * datagram: sequence 0 of 1, the only requests XDP answers or routes. */
static __always_inline int mc_frame_single(const struct mc_frame *fr)
{
	return fr->seq == 0 && fr->total == bpf_htons(1);
}

/* Whether a request from UDP source port sp (network order) must go
 * unanswered by a server on port own (host order): an answer to a
 * well-known port, to memcached's, or to the server's own could start a
 * loop between two servers on one spoofed datagram (lab/memcache.
 * Unanswerable has the whole rule, which the slow paths apply). */
static __always_inline int mc_loop_port(__be16 sp, __u16 own)
{
	__u16 p = bpf_ntohs(sp);

	return p < 1024 || p == 11211 || p == own;
}

#endif
