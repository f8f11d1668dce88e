/* The store's items (struct kv_val in the kv map): cas values, memcached's
 * expiry, the stripe locks that guard an item, and the reads and writes
 * made under them (key compare, liveness, key and data copies).
 * Part of bpf/kv.bpf.c, which includes it after its maps, its scratch
 * (struct scratch, MASK, STAT_INC, get_scratch) and its configuration:
 * not a header of its own. */
#ifndef XDPLAB_KV_ITEM_H
#define XDPLAB_KV_ITEM_H

static __always_inline __u64 new_cas(struct scratch *s, __u32 slot)
{
	__u64 seq = ++s->cas_seq;
	return (seq << 10) | ((__u64)(slot & 1) << 8) | (bpf_get_smp_processor_id() & 0xff);
}

/* memcached's realtime(): 0 never; negative already expired; up to 30 days
 * relative; beyond that an absolute unix time. */
static __always_inline __u64 abs_exptime(__s64 e, __u64 now)
{
	if (e == 0)
		return 0;
	if (e < 0)
		return 1;
	if (e <= RELTIME_MAX)
		return now + e;
	return e;
}

/* ---- item access; callers hold the key's stripe lock, but for GET's reads
 * (under the sequence count below) ---- */

/* The stripe lock does not keep the element ours: when the map is full, an
 * insert on another CPU may evict it and the kernel hands it straight to the
 * new key (no grace period), copying the new item in without our lock. The
 * kernel unlinks an element before it reuses it, so finding it still under
 * h after the locked section means nothing was copied into it meanwhile.
 * Otherwise what was read may be torn, and what was written may have landed
 * in another key's item: the caller voids that item (a writer) and lets the
 * slow path do the request again. */
static __always_inline int still_mapped(__u64 h, struct kv_val *v)
{
	return bpf_map_lookup_elem(&kv, &h) == (void *)v;
}

/* Keeps clang from moving a memory access across it (no CPU barrier). */
#define BARRIER() asm volatile("" ::: "memory")

/* ---- the item's sequence count (kv_val.seq) ----
 *
 * A GET reads the item without the stripe lock, so that serving one writes
 * nothing two CPUs share (the lock's word is written twice by every taker,
 * and sixteen stripes share a cache line). Writers still take the lock
 * against each other, and around their writes make the count odd before and
 * even after; a reader copies between two reads of the count and keeps the
 * copy only if both were the same even value (get_one).
 *
 * Ordering: BARRIER keeps clang's order; the CPU's is x86's, whose stores
 * become visible in program order and whose loads are not reordered with
 * each other. A weakly ordered CPU (arm64) would need read and write
 * barriers, which BPF lacks on the kernels we load on: the same caveat the
 * LRU re-lookup (still_mapped) has.
 *
 * The count is taken from the item, not kept apart: when the kernel reuses
 * an element under a writer (still_mapped), the copy brings the new item's
 * count, and seq_end's increment leaves whatever parity follows; an odd
 * count sends readers to the slow path, and the next write makes it even
 * again (seq_begin sets the low bit, seq_end adds one). */
static __always_inline void seq_begin(struct kv_val *v)
{
	WR(v->seq, RD(v->seq) | 1);
	BARRIER();
}

static __always_inline void seq_end(struct kv_val *v)
{
	BARRIER();
	WR(v->seq, RD(v->seq) + 1);
}

/* Voids an item that another key's insert took over while we wrote it (no
 * lock held: it is not our key's any more). The count is made odd first, so
 * that a reader of the new key already copying sees it move, and stays odd
 * until the new key's next write. */
static __always_inline void void_item(struct kv_val *v)
{
	WR(v->seq, RD(v->seq) | 1);
	BARRIER();
	v->cas = 0;
	v->slow = 0;
}

static __always_inline struct stripe *stripe_of(__u64 h)
{
	__u32 k = (__u32)(h ^ (h >> 32)) & (KV_NLOCKS - 1);
	return bpf_map_lookup_elem(&locks, &k);
}

/* Keys are compared and copied a word at a time up to their length; the
 * last word is zero-padded (load_key), so equal keys have equal words. */
static __always_inline int key_eq(struct scratch *s, struct kv_val *v)
{
	__u64 diff = v->klen ^ RD(s->klen);

	for (__u32 i = 0; i < KV_KEY_SLOT / 8; i++) {
		if (diff || i * 8 >= RD(s->klen))
			break;
		diff |= ((__u64 *)v->key)[i] ^ ((__u64 *)s->key)[i];
	}
	return diff == 0;
}

/* A live item of this key: present, not deleted, not expired, ours. now is
 * unix time in ns. */
static __always_inline int is_live(struct scratch *s, struct kv_val *v, __u64 now)
{
	if (!v->cas || !key_eq(s, v))
		return 0;
	if (v->exptime && v->exptime * NSEC <= now)
		return 0;
	return 1;
}

static __always_inline void set_key(struct scratch *s, struct kv_val *v)
{
	for (__u32 i = 0; i < KV_KEY_SLOT / 8; i++) {
		if (i * 8 >= RD(s->klen))
			break;
		((__u64 *)v->key)[i] = ((__u64 *)s->key)[i];
	}
	v->klen = RD(s->klen);
}

/* Copy the request's data block into v->data at 'at' (bounded by val_cap). */
static __always_inline void copy_data_in(struct scratch *s, struct kv_val *v, __u32 at)
{
	__u32 ds = RD(s->data_start), n = RD(s->nbytes);

	for (__u32 i = 0; i < KV_VAL_MAX / 8 + 1; i++) {
		__u32 o = i * 8;
		__u64 d = (__u64)at + o;

		if (o >= n || d > val_cap)
			break;
		PIN(d);
		CP8(&v->data[d], &s->req[(ds + o) & MASK]);
	}
}

#endif
