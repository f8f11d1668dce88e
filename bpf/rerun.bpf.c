// SPDX-License-Identifier: GPL-2.0
/* A benchmark-only harness (lab/internal/rerun) for timing a program that
 * rewrites its packet, warm, with BPF_PROG_TEST_RUN's Repeat: each run puts
 * the request back (its length with bpf_xdp_adjust_tail, its bytes with
 * bpf_xdp_store_bytes) and tail-calls the program under test (target[0]).
 * Its own cost is the same harness tail-calling trivial, which
 * lab/internal/rerun subtracts. Needs 5.18+ (bpf_xdp_store_bytes,
 * bpf_xdp_get_buff_len); nothing the product ships loads it. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define FRAME_MAX 2048

struct rerun_frame {
	__u32 len;
	__u8 data[FRAME_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rerun_frame);
} frame SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

SEC("xdp")
int rerun(struct xdp_md *ctx)
{
	__u32 z = 0, len;
	struct rerun_frame *f = bpf_map_lookup_elem(&frame, &z);

	if (!f)
		return XDP_ABORTED;
	len = f->len;
	if (len < 14 || len > FRAME_MAX)
		return XDP_ABORTED;
	if (bpf_xdp_adjust_tail(ctx, (int)len - (int)bpf_xdp_get_buff_len(ctx)))
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, f->data, len))
		return XDP_ABORTED;
	bpf_tail_call(ctx, &target, 0);
	return XDP_ABORTED;
}

/* The program the harness's own cost is timed with. */
SEC("xdp")
int trivial(struct xdp_md *ctx)
{
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
