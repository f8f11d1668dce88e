// Lesson 2: parse a memcached UDP request.
//
// Lesson 1's program, grown: edit the TODOs, then run
//   sudo lab workshop check 2
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

// key_len returns the length of the key at p, which must be followed by
// "\r\n" and the end of the datagram, or -1.
static __always_inline int key_len(const char *p, void *data_end)
{
	// TODO 1: scan for the '\r' that ends the key, at most KEY_MAX + 1
	// bytes in, with a bounds check before each byte. A ' ', '\n' or 0
	// before it means no single key. Then "\r\n" must be the datagram's
	// last two bytes. Return the key's length (1..KEY_MAX), or -1.
	return -1;
}

// record_key copies the n-byte key at p into last_key.
static __always_inline void record_key(const char *p, int n, void *data_end)
{
	// TODO 2: look up slot 0 of last_key and copy the n bytes at p into
	// its data, then set its len. Loop with a constant bound (KEY_MAX)
	// and stop at n; check each byte against data_end.
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

	if (is_word(p, data_end, "get ")) {
		int n = key_len(p + 4, data_end);
		if (n > 0) {
			record_key(p + 4, n, data_end);
			count(C_GET);
			return XDP_PASS;
		}
	}
	// TODO 3: count a "set " request as C_SET (is_word helps).
	count(C_OTHER);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
