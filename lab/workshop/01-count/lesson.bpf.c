// >>> solution
// Lesson 1: count and pass packets (reference solution).
// <<< solution
#if 0 // >>> starter
// Lesson 1: count and pass packets.
//
// Edit this file, then run: sudo lab workshop check 1
#endif // <<< starter
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MEMCACHED_PORT 11211

enum { C_PACKETS, C_MEMCACHED, C_MAX };

// One counter slot per CPU: no two CPUs ever write the same memory, so no
// atomics are needed. User space sums the slots.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	// >>> solution
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c) // the verifier insists: a lookup may return NULL
		(*c)++;
	// <<< solution
	#if 0 // >>> starter
	// TODO 1: look up slot `which` in `counters` with bpf_map_lookup_elem
	// and add one to it. The lookup may return NULL: check before use.
	#endif // <<< starter
}

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	count(C_PACKETS);

	// >>> solution
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;

	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (udp->dest != bpf_htons(MEMCACHED_PORT))
		return XDP_PASS;
	// <<< solution
	#if 0 // >>> starter
	// TODO 2: find IPv4 UDP datagrams to port MEMCACHED_PORT and
	// count(C_MEMCACHED) for each. Step over the Ethernet header
	// (struct ethhdr), the IPv4 header (struct iphdr, take only ihl == 5)
	// and the UDP header (struct udphdr); before reading each, check that
	// it ends before data_end. Multi-byte fields are big endian: compare
	// with bpf_htons(...).
	(void)data;
	(void)data_end;
	#endif // <<< starter

	// >>> solution
	count(C_MEMCACHED);
	// <<< solution
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
