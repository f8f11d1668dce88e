// >>> solution
// Lesson 6: the oldest kernel (reference solution).
// <<< solution
#if 0 // >>> starter
// Lesson 6: the oldest kernel.
//
// Lesson 5's program as it is written for today's kernels: it loads here,
// and not on Linux 5.10. Edit the TODOs, then run
//   sudo lab workshop check 6
//   sudo lab workshop check 6 --kernel 5.10
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
#define VAL_MAX 64  // the longest value XDP stores
#define REQ_MAX 512 // requests and replies, at most; a power of two,
#define MASK (REQ_MAX - 1) // so that i & MASK is always inside a buffer

// Set by user space before loading, from a probe of the running kernel:
// bpf_xdp_load_bytes and bpf_xdp_store_bytes exist (Linux 5.18). The
// verifier knows the value, walks only the branch it picks and drops the
// other: a kernel without the helpers never sees the calls.
const volatile __u8 have_xdp_bytes = 0;

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

// A reply: len bytes of text.
struct reply {
	__u32 len;
	char text[REQ_MAX];
};

// An item holds memcached's whole reply to a get of it, "VALUE <key>
// <flags> <bytes>\r\n<data>\r\n", and the lock that keeps a get on one CPU
// from copying it while a set on another rewrites it.
struct item {
	struct bpf_spin_lock lock;
	struct reply r;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct key);
	__type(value, struct item);
} items SEC(".maps");

// Per-CPU scratch: the key, the request's text, the reply being built.
// lock_space and out sit as lock and r do in struct item, so &lock_space
// can be inserted into items as a whole new item.
struct scratch {
	struct key k;
	__u32 at;  // parse position, written and read back (see RD)
	__u32 len; // bytes of text
	char text[REQ_MAX];
	__u32 lock_space;
	struct reply out;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

// RD reads a field back from memory, as a number the verifier knows only
// by its type: a loop that can end in many places hands on one state, not
// one per place (see the README).
#define RD(x) (*(volatile __u32 *)&(x))

// memcached's UDP frame header, before the request's text.
struct mc_frame {
	__be16 id, seq, total, reserved;
};

// HDR_LEN is the bytes before the text: Ethernet, IPv4 (no options), UDP
// and memcached's frame header.
#define HDR_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct mc_frame))

// HEAD_GROW is how far a reply grows the frame at its head: XDP leaves 256
// bytes of headroom, less the struct xdp_frame the kernel keeps there.
#define HEAD_GROW 128

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		(*c)++;
}

// read_key reads the key at p into k and returns its length, or -1 when
// p holds no key followed by "\r\n" and the end of the datagram.
static __always_inline int read_key(const char *p, void *data_end, struct key *k)
{
	int n;

	for (n = 0; n <= KEY_MAX; n++) {
		if ((void *)(p + n + 1) > data_end)
			return -1;
		char c = p[n];
		if (c == '\r')
			break;
		if (c == ' ' || c == '\n' || c == 0)
			return -1;
		if (n < KEY_MAX)
			k->data[n] = c;
	}
	if (n == 0 || n > KEY_MAX)
		return -1;
	if ((void *)(p + n + 2) > data_end || p[n + 1] != '\n')
		return -1;
	if ((void *)(p + n + 2) != data_end)
		return -1;
	k->len = n;
	return n;
}

static __always_inline int is_word(const char *p, void *data_end, const char w[4])
{
	if ((void *)(p + 4) > data_end)
		return 0;
	return p[0] == w[0] && p[1] == w[1] && p[2] == w[2] && p[3] == w[3];
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

// put appends the n (constant) bytes of str to out.
static __always_inline void put(struct reply *out, const char *str, int n)
{
	__u32 o = RD(out->len);

	for (int i = 0; i < n; i++)
		out->text[(o + i) & MASK] = str[i];
	out->len = (o + n) & MASK;
}

// reply turns the frame into the reply in s->out and sends it back.
static __always_inline int reply(struct xdp_md *ctx, struct scratch *s)
{
	__u32 len = RD(s->out.len);
	if (len > REQ_MAX)
		return XDP_PASS;

	// Grow at the head, where XDP guarantees room, and move the
	// headers to the new start; then cut the tail to the reply's end.
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int need = HDR_LEN + len;
	if (need > (int)(data_end - data) + HEAD_GROW)
		return XDP_PASS;
	if (bpf_xdp_adjust_head(ctx, -HEAD_GROW))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + HEAD_GROW + HDR_LEN > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, data + HEAD_GROW, HDR_LEN);
	if (bpf_xdp_adjust_tail(ctx, need - (int)(data_end - data)))
		return XDP_DROP;

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
	__u16 udp_len = sizeof(*udp) + sizeof(*mc) + len;
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
	ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
	ip->ttl = 64;
	ip_checksum(ip);

	// >>> solution
	if (have_xdp_bytes) {
		// One call; it checks the bounds itself. len is 1..REQ_MAX.
		// 1..REQ_MAX, computed so the verifier sees the range (see README)
		if (len < 1 || bpf_xdp_store_bytes(ctx, HDR_LEN, s->out.text, ((len - 1) & MASK) + 1))
			return XDP_DROP;
		return XDP_TX;
	}
	for (int i = 0; i < REQ_MAX; i++) {
		if (i >= len)
			break;
		if ((void *)(q + i + 1) > data_end)
			return XDP_DROP;
		q[i] = s->out.text[i];
	}
	// <<< solution
	#if 0 // >>> starter
	// TODO 1: keep this call where have_xdp_bytes says the kernel has
	// it; else copy the reply with a loop, as lesson 5 did.
	// 1..REQ_MAX, computed so the verifier sees the range (see README)
	if (len < 1 || bpf_xdp_store_bytes(ctx, HDR_LEN, s->out.text, ((len - 1) & MASK) + 1))
		return XDP_DROP;
	#endif // <<< starter
	return XDP_TX;
}

// get answers a get of s->k: the item's reply under its lock, then END.
static __always_inline int get(struct xdp_md *ctx, struct scratch *s)
{
	struct item *it = bpf_map_lookup_elem(&items, &s->k);

	s->out.len = 0;
	if (it) {
		count(C_HIT);
		bpf_spin_lock(&it->lock);
		s->out = it->r; // a constant-size copy: no loop, no call under the lock
		bpf_spin_unlock(&it->lock);
	}
	put(&s->out, "END\r\n", 5);
	return reply(ctx, s);
}

// number reads a decimal number of at most 10 digits at s->at, as memcached
// prints it (no sign, no leading zero), and appends its digits to s->out.
// It returns the number (-1: none) and leaves s->at on the byte after it.
static __always_inline __s64 number(struct scratch *s)
{
	__u32 at = RD(s->at);
	__u32 o = RD(s->out.len);
	__s64 v = 0;
	int d;

	for (d = 0; d < 11; d++) {
		if (at + d >= RD(s->len))
			return -1;
		char c = s->text[(at + d) & MASK];
		if (c < '0' || c > '9')
			break;
		if (d == 10 || (d == 1 && v == 0))
			return -1; // too long, or a leading zero
		v = v * 10 + (c - '0');
		s->out.text[(o + d) & MASK] = c;
	}
	if (d == 0 || v > 0xffffffffLL)
		return -1;
	s->at = at + d;
	s->out.len = (o + d) & MASK;
	return v;
}

// expect steps over the n (constant) bytes of str at s->at, or fails.
static __always_inline int expect(struct scratch *s, const char *str, int n)
{
	__u32 at = RD(s->at);

	if (at + n > RD(s->len))
		return -1;
	for (int i = 0; i < n; i++)
		if (s->text[(at + i) & MASK] != str[i])
			return -1;
	s->at = at + n;
	return 0;
}

// parse_set reads "set <key> <flags> 0 <bytes>[ noreply]\r\n<data>\r\n" from
// s->text into s->k and, as the item's reply, into s->out. It returns 1 for
// noreply, 0 without, -1 for a set XDP leaves to the kernel.
static __always_inline int parse_set(struct scratch *s)
{
	__u32 len = RD(s->len);
	int n;

	__builtin_memset(&s->k, 0, sizeof(s->k));
	s->out.len = 0;
	put(&s->out, "VALUE ", 6);
	for (n = 0; n <= KEY_MAX; n++) {
		if (4 + n >= len)
			return -1;
		char c = s->text[(4 + n) & MASK];
		if (c == ' ')
			break;
		if (c <= ' ' || c == 127)
			return -1;
		s->k.data[n & 255] = c;
		s->out.text[(6 + n) & MASK] = c;
	}
	if (n == 0 || n > KEY_MAX)
		return -1;
	s->k.len = n;
	s->out.len = 6 + n;
	s->at = 4 + n;

	if (expect(s, " ", 1))
		return -1;
	put(&s->out, " ", 1);
	if (number(s) < 0) // flags, returned as given
		return -1;
	if (expect(s, " 0 ", 3)) // exptime: XDP keeps no clocks
		return -1;
	put(&s->out, " ", 1);
	__s64 bytes = number(s);
	if (bytes < 0 || bytes > VAL_MAX)
		return -1;
	int noreply = expect(s, " noreply", 8) == 0;
	if (expect(s, "\r\n", 2))
		return -1;
	put(&s->out, "\r\n", 2);

	// The data: exactly bytes bytes, then "\r\n", then the datagram ends.
	__u32 at = RD(s->at), o = RD(s->out.len);
	if (at + bytes + 2 != len)
		return -1;
	for (int i = 0; i < VAL_MAX; i++) {
		if (i >= bytes)
			break;
		s->out.text[(o + i) & MASK] = s->text[(at + i) & MASK];
	}
	s->at = at + bytes;
	s->out.len = (o + bytes) & MASK;
	if (expect(s, "\r\n", 2))
		return -1;
	put(&s->out, "\r\n", 2);
	return noreply;
}

// set stores the item parse_set built: in place under the item's lock when
// the key is there, as a new item when not.
static __always_inline int set(struct xdp_md *ctx, struct scratch *s)
{
	int noreply = parse_set(s);
	if (noreply < 0)
		return XDP_PASS;

	struct item *it = bpf_map_lookup_elem(&items, &s->k);
	if (it) {
		bpf_spin_lock(&it->lock);
		it->r = s->out;
		bpf_spin_unlock(&it->lock);
	} else if (bpf_map_update_elem(&items, &s->k, &s->lock_space, BPF_NOEXIST)) {
		return XDP_PASS; // full, or another CPU's set came first: the kernel decides
	}
	if (noreply)
		return XDP_DROP; // answered: by saying nothing
	s->out.len = 0;
	put(&s->out, "STORED\r\n", 8);
	return reply(ctx, s);
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
		count(C_OTHER);
		return XDP_PASS;
	}
	char *p = (void *)(mc + 1);

	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return XDP_PASS;

	if (is_word(p, data_end, "get ")) {
		__builtin_memset(&s->k, 0, sizeof(s->k));
		if (read_key(p + 4, data_end, &s->k) > 0) {
			count(C_GET);
			return get(ctx, s);
		}
	} else if (is_word(p, data_end, "set ")) {
		count(C_SET);
		// The whole request into the scratch, to parse it there.
		// >>> solution
		if (have_xdp_bytes) {
			__u32 n = data_end - (void *)p;
			if (n < 1 || n > REQ_MAX ||
			    bpf_xdp_load_bytes(ctx, HDR_LEN, s->text, ((n - 1) & MASK) + 1))
				return XDP_PASS;
			s->len = n;
			return set(ctx, s);
		}
		int i;
		for (i = 0; i < REQ_MAX; i++) {
			if ((void *)(p + i + 1) > data_end)
				break;
			s->text[i] = p[i];
		}
		s->len = i;
		// <<< solution
		#if 0 // >>> starter
		// TODO 2: the same here: this call where the kernel has it,
		// else a loop (lesson 5's).
		__u32 n = data_end - (void *)p;
		if (n < 1 || n > REQ_MAX ||
		    bpf_xdp_load_bytes(ctx, HDR_LEN, s->text, ((n - 1) & MASK) + 1))
			return XDP_PASS;
		s->len = n;
		#endif // <<< starter
		return set(ctx, s);
	}
	count(C_OTHER);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
