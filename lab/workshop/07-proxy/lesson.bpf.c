// >>> solution
// Lesson 7: route by key to backends (reference solution).
// <<< solution
#if 0 // >>> starter
// Lesson 7: route by key to backends.
//
// A new program, the proxy, from pieces of lessons 1 to 3: edit the TODOs,
// then run
//   sudo lab workshop check 7
#endif // <<< starter
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MEMCACHED_PORT 11211
#define KEY_MAX 250
#define BACKENDS_MAX 8

// Set by user space before loading: how many backends there are, and the
// address clients send to (network order).
const volatile __u32 nbackends = 1;
const volatile __be32 proxy_addr = 0;

enum { C_PACKETS, C_MEMCACHED, C_ROUTED, C_OTHER, C_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// A backend, as user space found it: its address and MAC, and the
// proxy's interface towards it (index and MAC).
struct backend {
	__be32 addr;
	__u32 ifindex;
	__u8 mac[ETH_ALEN];
	__u8 via_mac[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BACKENDS_MAX);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct mc_frame {
	__be16 id, seq, total, reserved;
};

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		(*c)++;
}

static __always_inline int is_word(const char *p, void *data_end, const char w[4])
{
	if ((void *)(p + 4) > data_end)
		return 0;
	return p[0] == w[0] && p[1] == w[1] && p[2] == w[2] && p[3] == w[3];
}

// key_hash hashes the key at p with FNV-1a (32 bits), as nutcracker's
// fnv1a_32 does. The key ends at the byte end (' ' after a set's key, '\r'
// after a get's only key) within KEY_MAX bytes. It returns 0 and the hash
// in *h, or -1 for no key.
static __always_inline int key_hash(const char *p, void *data_end, char end, __u32 *h)
{
	// >>> solution
	__u32 hash = 2166136261u;
	int n;

	for (n = 0; n <= KEY_MAX; n++) {
		if ((void *)(p + n + 1) > data_end)
			return -1;
		unsigned char c = p[n];
		if (c == end)
			break;
		if (c <= ' ' || c == 127)
			return -1; // another key, or no key

		hash ^= c;
		hash *= 16777619u;
	}
	if (n == 0 || n > KEY_MAX)
		return -1;
	*h = hash;
	return 0;
	// <<< solution
	#if 0 // >>> starter
	// TODO 1: FNV-1a over the key's bytes: hash = 2166136261; then per
	// byte c: hash ^= c; hash *= 16777619. Scan at most KEY_MAX + 1
	// bytes, a bounds check before each; the key ends at the byte end;
	// a byte <= ' ' or 127 before it means no single key (-1). A key
	// is 1..KEY_MAX bytes. Store the hash in *h and return 0.
	return -1;
	#endif // <<< starter
}

static __always_inline void ip_checksum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;

	ip->check = 0;
	for (int i = 0; i < (int)sizeof(*ip) / 2; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = ~sum;
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
	if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP || ip->ttl <= 1 || ip->daddr != proxy_addr)
		return XDP_PASS;

	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (udp->dest != bpf_htons(MEMCACHED_PORT))
		return XDP_PASS;

	count(C_MEMCACHED);

	struct mc_frame *mc = (void *)(udp + 1);
	char *p = (void *)(mc + 1);
	if ((void *)p > data_end || mc->seq != 0 || mc->total != bpf_htons(1)) {
		count(C_OTHER);
		return XDP_PASS;
	}
	__u32 h;
	int err = -1;
	if (is_word(p, data_end, "get "))
		err = key_hash(p + 4, data_end, '\r', &h);
	else if (is_word(p, data_end, "set "))
		err = key_hash(p + 4, data_end, ' ', &h);
	if (err) {
		count(C_OTHER); // the kernel's, or a slow path's
		return XDP_PASS;
	}

	__u32 i = h % (nbackends ? nbackends : 1);
	struct backend *b = bpf_map_lookup_elem(&backends, &i);
	if (!b || !b->addr)
		return XDP_PASS;

	// >>> solution
	// To the backend, from the proxy's interface towards it. The client's
	// address, port and request id stay: the backend answers the client.
	__builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, b->via_mac, ETH_ALEN);
	ip->daddr = b->addr;
	ip->ttl--;
	ip_checksum(ip);
	udp->check = 0; // the pseudo header changed; 0 is "none" over IPv4

	count(C_ROUTED);
	return bpf_redirect(b->ifindex, 0);
	// <<< solution
	#if 0 // >>> starter
	// TODO 2: to the backend, from the proxy's interface towards it:
	// Ethernet destination b->mac, source b->via_mac; IP destination
	// b->addr, ttl one less, a new IP checksum; UDP checksum 0 (the
	// pseudo header changed). The client's address, port and request
	// id stay: the backend answers the client directly. Then count
	// C_ROUTED and return bpf_redirect(b->ifindex, 0).
	return XDP_PASS;
	#endif // <<< starter
}

char LICENSE[] SEC("license") = "GPL";
