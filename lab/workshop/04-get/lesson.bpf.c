// >>> solution
// Lesson 4: serve GET from a map (reference solution).
// <<< solution
#if 0 // >>> starter
// Lesson 4: serve GET from a map.
//
// Lesson 3's program, now with items: edit the TODOs, then run
//   sudo lab workshop check 4
#endif // <<< starter
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MEMCACHED_PORT 11211
#define KEY_MAX 250   // memcached's longest key
#define REPLY_MAX 384 // "VALUE <250-byte key> <flags> <bytes>\r\n<64 bytes>\r\n" fits

enum { C_PACKETS, C_MEMCACHED, C_GET, C_SET, C_OTHER, C_HIT, C_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// A key: data[0..len), the rest zero. As a hash map's key all of it
// counts, padding included, so it is zeroed before a key is read into it.
struct key {
	__u32 len;
	char data[KEY_MAX];
};

// An item holds memcached's whole reply to a get of it, as BMC does:
// "VALUE <key> <flags> <bytes>\r\n<data>\r\n". Whoever stores the item
// formats it once; each get only copies it.
struct item {
	__u32 len; // bytes of reply used
	char reply[REPLY_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct key);
	__type(value, struct item);
} items SEC(".maps");

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

// HDR_LEN is the bytes before the text: Ethernet, IPv4 (no options), UDP
// and memcached's frame header.
#define HDR_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct mc_frame))

// HEAD_GROW is how far a reply grows the frame at its head: XDP leaves 256
// bytes of headroom, less the struct xdp_frame the kernel keeps there.
#define HEAD_GROW 128

// reply turns the frame into the reply to a get: the item's reply and END
// for a hit, END alone for a miss (it NULL).
static __always_inline int reply(struct xdp_md *ctx, const struct item *it)
{
	__u32 len = 0;

	if (it) {
		len = it->len;
		if (len > REPLY_MAX)
			return XDP_PASS; // not an item this program understands
	}

	// Size the frame first: a hit grows it, a miss shrinks it. Should
	// there be no room, nothing has changed yet and the kernel may
	// have the request.
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int need = HDR_LEN + len + MISS_LEN;
	if (need > (int)(data_end - data) + HEAD_GROW)
		return XDP_PASS;

	// Grow at the head, where XDP guarantees room, and move the
	// headers to the new start; then cut the tail to the reply's end.
	// (A veth may have no room at all at the tail.)
	if (bpf_xdp_adjust_head(ctx, -HEAD_GROW))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + HEAD_GROW + HDR_LEN > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, data + HEAD_GROW, HDR_LEN);
	if (bpf_xdp_adjust_tail(ctx, need - (int)(data_end - data)))
		return XDP_DROP;

	// A new frame: new pointers, new bounds checks.
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	struct mc_frame *mc = (void *)(udp + 1);
	char *q = (void *)(mc + 1);
	if ((void *)q > data_end)
		return XDP_DROP;

	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__be32 addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	__be16 port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;

	mc->seq = 0;
	mc->total = bpf_htons(1);
	mc->reserved = 0;
	__u16 udp_len = sizeof(*udp) + sizeof(*mc) + len + MISS_LEN;
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
	ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
	ip->ttl = 64;
	ip_checksum(ip);

	if (it) {
		// >>> solution
		for (int i = 0; i < REPLY_MAX; i++) {
			if (i >= len)
				break;
			if ((void *)(q + i + 1) > data_end)
				return XDP_DROP;
			q[i] = it->reply[i];
		}
		q += len & 511; // len <= REPLY_MAX < 512: the mask says so to the verifier
		// <<< solution
		#if 0 // >>> starter
		// TODO 2: copy the item's reply (len bytes of it->reply) to q,
		// a bounds check per byte, in a loop bounded by REPLY_MAX;
		// then step q past it (q += len & 511: the mask tells the
		// verifier how far q can go).
		#endif // <<< starter
	}
	if ((void *)(q + MISS_LEN) > data_end)
		return XDP_DROP;
	__builtin_memcpy(q, MISS, MISS_LEN);
	return XDP_TX;
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
	if (!k)
		return XDP_PASS;

	if (is_word(p, data_end, "get ")) {
		// >>> solution
		__builtin_memset(k, 0, sizeof(*k)); // the padding is part of the key
		// <<< solution
		#if 0 // >>> starter
		// TODO 1: zero k first (__builtin_memset): the hash map
		// compares all of struct key, padding included.
		#endif // <<< starter
		if (read_key(p + 4, data_end, k) > 0) {
			count(C_GET);
			// >>> solution
			struct item *it = bpf_map_lookup_elem(&items, k);
			// <<< solution
			#if 0 // >>> starter
			// TODO 1: look the key up in items.
			struct item *it = NULL;
			#endif // <<< starter
			if (it)
				count(C_HIT);
			return reply(ctx, it);
		}
	} else if (is_word(p, data_end, "set ")) {
		count(C_SET);
		return XDP_PASS;
	}
	count(C_OTHER);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
