/* Between the frame and the scratch: the payload copied in and out, the
 * reply's checksum, the per-source reply byte budget (udp_rate, leased to
 * CPUs in slices).
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

/* A CPU that answers one source again takes 1/2^RATE_LEASE_SHIFT of the
 * burst from its bucket at once, beyond the reply's own bytes, and spends it
 * on that source's next replies without writing the bucket: otherwise every
 * CPU serving a source writes its bucket on every reply, a cache line they
 * pass between them. The lease counts as spent, so the bucket never gives
 * more than it did; a CPU holds at most one lease (the last source it
 * answered, in its scratch) and gives it back when it answers another. */
#define RATE_LEASE_SHIFT 6

/* Spends n bytes of src's budget; 0 when it had them. */
static __always_inline int over_rate(struct scratch *s, const __u64 *src, __u32 n, __u64 now)
{
	struct rate_bucket *b, nb;
	__u64 t, need = n, lease = 0, had = 0;

	if (s->rl_src[0] == src[0] && s->rl_src[1] == src[1]) {
		had = s->rl_lease;
		if (had >= n) {
			s->rl_lease = had - n;
			return 0;
		}
		need = n - had;
		lease = rate_burst >> RATE_LEASE_SHIFT;
	} else if (s->rl_lease) {
		/* Back to the source it came from, if its bucket is still there. */
		b = bpf_map_lookup_elem(&udp_rate, s->rl_src);
		if (b) {
			t = b->tokens + s->rl_lease;
			b->tokens = t < rate_burst ? t : rate_burst;
		}
	}
	s->rl_src[0] = src[0];
	s->rl_src[1] = src[1];
	s->rl_lease = 0;
	b = bpf_map_lookup_elem(&udp_rate, src);
	if (!b) {
		if (need > rate_burst) {
			s->rl_lease = had;
			return 1;
		}
		nb.tokens = rate_burst - need;
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
	if (t < need) {
		b->tokens = t;
		s->rl_lease = had;
		return 1;
	}
	t -= need;
	if (lease > t)
		lease = 0; /* the last tokens stay where every CPU can spend them */
	b->tokens = t - lease;
	s->rl_lease = lease;
	return 0;
}

#endif
