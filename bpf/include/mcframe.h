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

#endif
