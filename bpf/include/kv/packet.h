/* Between the frame and the scratch: the payload copied in and out, the
 * reply's checksum, the per-source reply byte budget (udp_rate).
 * Part of bpf/kv.bpf.c, which includes it after its maps, its scratch
 * (struct scratch, MASK, STAT_INC, get_scratch) and its configuration:
 * not a header of its own. */
#ifndef XDPLAB_KV_PACKET_H
#define XDPLAB_KV_PACKET_H

/* ---- packet in, packet out ---- */

/* The payload between the frame and the scratch: req in, resp out. */
static __always_inline int copy_pkt(struct xdp_md *ctx, struct scratch *s, void *data, void *data_end, __u32 off,
				    int out)
{
	return pkt_copy_ctx(ctx, xdp_bytes, data, data_end, off, out ? s->resp : s->req, MASK,
			    out ? &s->resp_len : &s->req_len, &s->poff, out);
}

/* Ones' complement sum of resp[0..resp_len), padded with zeros to 4 bytes. */
static __always_inline __u64 sum_resp(struct scratch *s, __u64 seed)
{
	__u32 len = RD(s->resp_len) & MASK;
	__u32 l4 = (len + 3) & ~3U;

	for (__u32 j = 0; j < 3; j++)
		if (len + j < l4)
			s->resp[(len + j) & MASK] = 0;
#pragma unroll
	for (__u32 c = 0; c < 4; c++) {
		__u32 off = c * 512, sz;

		l4 = (RD(s->resp_len) + 3) & ~3U;
		if (l4 <= off)
			break;
		sz = l4 - off;
		if (sz > 512)
			sz = 512;
		seed = (__u32)bpf_csum_diff(0, 0, (void *)&s->resp[off], sz, (__u32)seed);
	}
	return seed;
}

/* Spends n bytes of src's budget; 0 when it had them. */
static __always_inline int over_rate(const void *src, __u32 n, __u64 now)
{
	struct rate_bucket *b, nb;
	__u64 t;

	b = bpf_map_lookup_elem(&udp_rate, src);
	if (!b) {
		if (n > rate_burst)
			return 1;
		nb.tokens = rate_burst - n;
		nb.stamp = now;
		bpf_map_update_elem(&udp_rate, src, &nb, BPF_ANY);
		return 0;
	}
	t = b->tokens;
	if (now > b->stamp) {
		__u64 dt = now - b->stamp;

		/* dt below a second and rate below 2^32: no overflow */
		t += dt >= NSEC ? rate_burst : dt * rate_bytes / NSEC;
		if (t > rate_burst)
			t = rate_burst;
		b->stamp = now;
	}
	if (t < n) {
		b->tokens = t;
		return 1;
	}
	b->tokens = t - n;
	return 0;
}

#endif
