// >>> solution
// Lesson 2: parse a memcached UDP request (reference solution).
// <<< solution
#if 0 // >>> starter
// Lesson 2: parse a memcached UDP request.
//
// Lesson 1's program, grown: edit the TODOs, then run
//   sudo lab workshop check 2
#endif // <<< starter
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MEMCACHED_PORT 11211
#define KEY_MAX 250 // memcached's longest key

enum { C_PACKETS, C_MEMCACHED, C_GET, C_SET, C_OTHER, C_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// The key of the last well-formed get: data[0..len).
struct key {
	__u32 len;
	char data[KEY_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct key);
} last_key SEC(".maps");

// Where a key is read to before it is known to be good: one per CPU, as
// programs on two CPUs run at once. (The stack has room for one struct
// key, but only 512 bytes in all.)
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct key);
} scratch SEC(".maps");

// memcached's UDP frame header, before the request's text.
struct mc_frame {
	__be16 id, seq, total, reserved;
};

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		(*c)++;
}

// read_key reads the key at p into k and returns its length, or -1 when
// p holds no key followed by "\r\n" and the end of the datagram. One pass:
// each byte is checked and copied in the same loop iteration.
static __always_inline int read_key(const char *p, void *data_end, struct key *k)
{
	// >>> solution
	int n;

	for (n = 0; n <= KEY_MAX; n++) { // a constant bound: the verifier can see the end
		if ((void *)(p + n + 1) > data_end)
			return -1;
		char c = p[n];
		if (c == '\r')
			break;
		if (c == ' ' || c == '\n' || c == 0)
			return -1; // several keys, or not a key
		if (n < KEY_MAX) // as the verifier sees it, n may be KEY_MAX here
			k->data[n] = c;
	}
	if (n == 0 || n > KEY_MAX)
		return -1;
	// "> data_end" first: "!= data_end" alone teaches the verifier nothing.
	if ((void *)(p + n + 2) > data_end || p[n + 1] != '\n')
		return -1;
	if ((void *)(p + n + 2) != data_end)
		return -1; // more after the request line
	k->len = n;
	return n;
	// <<< solution
	#if 0 // >>> starter
	// TODO 1: scan the key, at most KEY_MAX + 1 bytes in, with a
	// bounds check before each byte: '\r' ends it; a ' ', '\n' or 0
	// before that means no single key (-1). Copy each byte into
	// k->data as you go. The key must be 1..KEY_MAX bytes, and its
	// "\r\n" the datagram's last two bytes. Set k->len, return it.
	return -1;
	#endif // <<< starter
}

static __always_inline int is_word(const char *p, void *data_end, const char w[4])
{
	if ((void *)(p + 4) > data_end)
		return 0;
	return p[0] == w[0] && p[1] == w[1] && p[2] == w[2] && p[3] == w[3];
}

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	count(C_PACKETS);

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

	count(C_MEMCACHED);

	struct mc_frame *mc = (void *)(udp + 1);
	if ((void *)(mc + 1) > data_end || mc->seq != 0 || mc->total != bpf_htons(1)) {
		count(C_OTHER); // no frame header, or one of several datagrams
		return XDP_PASS;
	}
	const char *p = (void *)(mc + 1);

	__u32 zero = 0;
	struct key *k = bpf_map_lookup_elem(&scratch, &zero);
	struct key *last = bpf_map_lookup_elem(&last_key, &zero);
	if (!k || !last)
		return XDP_PASS;

	if (is_word(p, data_end, "get ")) {
		if (read_key(p + 4, data_end, k) > 0) {
			// >>> solution
			*last = *k; // a good key: now it may be recorded
			// <<< solution
			#if 0 // >>> starter
			// TODO 2: now the key is good: record it in last_key
			// (a struct assignment copies it all).
			#endif // <<< starter
			count(C_GET);
			return XDP_PASS;
		}
	// >>> solution
	} else if (is_word(p, data_end, "set ")) {
		count(C_SET);
		return XDP_PASS;
	// <<< solution
	}
	#if 0 // >>> starter
	// TODO 3: count a "set " request as C_SET (is_word helps).
	#endif // <<< starter
	count(C_OTHER);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
