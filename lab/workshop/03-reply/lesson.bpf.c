// >>> solution
// Lesson 3: answer with XDP_TX (reference solution).
// <<< solution
#if 0 // >>> starter
// Lesson 3: answer with XDP_TX.
//
// Lesson 2's program, now answering gets: edit the TODOs, then run
//   sudo lab workshop check 3
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
}

static __always_inline int is_word(const char *p, void *data_end, const char w[4])
{
	if ((void *)(p + 4) > data_end)
		return 0;
	return p[0] == w[0] && p[1] == w[1] && p[2] == w[2] && p[3] == w[3];
}

// The reply to a get of a key we do not have: memcached's miss.
#define MISS "END\r\n"
#define MISS_LEN 5

// ip_checksum sets the IPv4 header checksum: the one's complement of the
// one's complement sum of the header's 16-bit words.
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

// reply_miss turns the get in the frame into memcached's reply, END, and
// sends it back where it came from. The headers were bounds-checked by the
// caller; text is the request's text, at least MISS_LEN bytes long.
static __always_inline int reply_miss(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *ip,
				      struct udphdr *udp, struct mc_frame *mc, char *text)
{
	// >>> solution
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 mac[ETH_ALEN];
	__be32 addr;
	__be16 port;

	if ((void *)(text + MISS_LEN) > data_end)
		return XDP_PASS;

	// Back where it came from: swap MACs, addresses and ports.
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;

	// The reply: the request's id, one datagram, then END.
	mc->seq = 0;
	mc->total = bpf_htons(1);
	mc->reserved = 0;
	__builtin_memcpy(text, MISS, MISS_LEN);

	// New lengths, and the IPv4 checksum that covers them. UDP over
	// IPv4 may go without a checksum: 0 says so.
	__u16 udp_len = sizeof(*udp) + sizeof(*mc) + MISS_LEN;
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
	ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
	ip->ttl = 64;
	ip_checksum(ip);

	// Cut the frame after END. After this call every packet pointer
	// is invalid (the verifier forgets them): use none of them again.
	int delta = (int)(sizeof(*eth) + sizeof(*ip) + udp_len) - (int)(data_end - data);
	if (bpf_xdp_adjust_tail(ctx, delta))
		return XDP_DROP; // half rewritten: do not pass it on
	return XDP_TX;
	// <<< solution
	#if 0 // >>> starter
	// TODO 1: check that MISS_LEN bytes fit at text (XDP_PASS if not).
	// TODO 2: swap the MACs (eth), the addresses (ip) and the ports (udp).
	// TODO 3: the frame header says seq 0, total 1, reserved 0 (the id
	//         stays); write MISS at text.
	// TODO 4: set udp->len, udp->check = 0, ip->tot_len, then
	//         ip_checksum(ip), for a datagram that ends after MISS.
	// TODO 5: cut the frame there with bpf_xdp_adjust_tail(ctx, delta)
	//         (delta = new frame length - old; ctx->data_end - ctx->data
	//         is the old) and return XDP_TX.
	return XDP_PASS;
	#endif // <<< starter
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
	char *p = (void *)(mc + 1);

	__u32 zero = 0;
	struct key *k = bpf_map_lookup_elem(&scratch, &zero);
	struct key *last = bpf_map_lookup_elem(&last_key, &zero);
	if (!k || !last)
		return XDP_PASS;

	if (is_word(p, data_end, "get ")) {
		if (read_key(p + 4, data_end, k) > 0) {
			*last = *k; // a good key: now it may be recorded
			count(C_GET);
			return reply_miss(ctx, eth, ip, udp, mc, p);
		}
	} else if (is_word(p, data_end, "set ")) {
		count(C_SET);
		return XDP_PASS;
	}
	count(C_OTHER);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
