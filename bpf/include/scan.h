/* Verifier-shaping and word-at-a-time primitives shared by the XDP programs
 * (bpf/kv.bpf.c, bpf/proxy.bpf.c), which both parse memcached's text
 * protocol out of a per-CPU scratch buffer. */
#ifndef XDPLAB_SCAN_H
#define XDPLAB_SCAN_H

#include <linux/types.h>

/* Force a real load/store so values crossing loops reach the verifier as
 * unknown scalars and the states after each loop converge. */
#define RD(x) (*(volatile typeof(x) *)&(x))
#define WR(x, v) (*(volatile typeof(x) *)&(x) = (v))

/* Keeps clang from re-deriving a pointer or index after its bounds check,
 * which would leave the verifier checking one register and seeing another used. */
#define PIN(p) asm volatile("" : "+r"(p))

/* An 8-byte copy. clang gives the address of a byte-array element alignment
 * 1 and would split the copy into sixteen byte moves; BPF on the targets we
 * run (x86-64, arm64) loads and stores unaligned words fine. */
#define CP8(dst, src) \
	(*(__u64 *)__builtin_assume_aligned((void *)(dst), 8) = \
		 *(const __u64 *)__builtin_assume_aligned((const void *)(src), 8))

/* Word-at-a-time scanning: does w hold a zero byte / the byte c / a byte
 * below n (n <= 128)? Exact as yes/no answers. */
#define ONES 0x0101010101010101ULL
#define HAS_ZERO(w) (((w) - ONES) & ~(w) & (ONES << 7))
#define HAS_BYTE(w, c) HAS_ZERO((w) ^ (ONES * (__u8)(c)))
#define HAS_LESS(w, n) (((w) - ONES * (n)) & ~(w) & (ONES << 7))
#define LD8(p) (*(const __u64 *)__builtin_assume_aligned((const void *)(p), 8))

/* The index (0..7, little-endian) of the lowest byte a HAS_ZERO-style mask
 * m flags, or 8 when it flags none. The lowest flag of such a mask is
 * always exact (a false one only follows a true one), so this ends a scan
 * without a byte loop: m & -m isolates bit 8k+7, and the multiply brings k
 * to the top byte. */
static __always_inline __u32 first_flagged(__u64 m)
{
	if (!m)
		return 8;
	return (((m & -m) >> 7) * 0x0001020304050607ULL) >> 56;
}

/* The next space-separated token of a line: from *pos up to *end (indices
 * into req, masked by mask), its start into *ts and its length into *tl,
 * and *pos past it. Returns the length (0 at the line's end), or bad (also
 * left in *tl) for a run of 32 spaces or a token longer than max. The
 * pointers are the caller's per-CPU scratch fields: values crossing the
 * loops go through them (RD/WR), so each loop's exits converge. Both
 * programs' tokenizers are this, in a global function of their own. */
static __always_inline int next_token(const __u8 *req, __u32 mask, __u32 *pos, __u32 *end,
				      __u32 *ts, __u32 *tl, __u32 max, int bad)
{
	__u32 p, e, i;

	p = RD(*pos);
	e = RD(*end);
	/* Bounded well below the buffer: longer runs are no request XDP
	 * handles, and bad sends them to the slow path. */
	for (i = 0; i < 32; i++) {
		if (p >= e || req[p & mask] != ' ')
			break;
		p++;
	}
	if (i == 32) {
		WR(*tl, bad);
		return bad;
	}
	WR(*ts, p);
	/* Reload both: the first loop's exits must not fork the next ones. */
	p = RD(*ts);
	e = RD(*end);
	/* Whole words without a space first, then the last few bytes. */
	for (i = 0; i < (max + 8) / 8; i++) {
		if (p + 8 > e || HAS_BYTE(LD8(&req[p & mask]), ' '))
			break;
		p += 8;
	}
	WR(*pos, p);
	p = RD(*pos);
	/* Fewer than 8 bytes of the line are left, or the word at p holds a
	 * space: the token ends at that space or at the line's end. */
	{
		__u32 k = first_flagged(HAS_BYTE(LD8(&req[p & mask]), ' '));
		__u32 n = e > p ? e - p : 0;

		p += k < n ? k : n;
	}
	WR(*pos, p);
	WR(*tl, p - RD(*ts));
	if (RD(*tl) > max) {
		WR(*tl, bad);
		return bad;
	}
	return p - RD(*ts);
}

/* Whether the current token (ts, tl: the caller's scratch fields) is the
 * n bytes of w. */
static __always_inline int token_is(const __u8 *req, __u32 mask, __u32 *ts, __u32 *tl, const char *w, __u32 n)
{
	__u32 t = RD(*ts);

	if (RD(*tl) != n)
		return 0;
#pragma unroll
	for (__u32 i = 0; i < n; i++)
		if (req[(t + i) & mask] != w[i])
			return 0;
	return 1;
}

/* The current token (ts, tl: the caller's scratch fields) as an unsigned
 * decimal of 1..maxd digits (maxd a constant, at most 20): 0 with its value
 * in *v, or -1 for anything else, including a value past 2^64 - 1 (only
 * possible with 20 digits, so only then checked). The caller stores *v
 * into its scratch (WR). */
static __always_inline int token_u64(const __u8 *req, __u32 mask, __u32 *ts, __u32 *tl, __u32 maxd, __u64 *v)
{
	__u32 t, l, i;
	__u64 n = 0;

	t = RD(*ts);
	l = RD(*tl);
	if (l == 0 || l > maxd)
		return -1;
	for (i = 0; i < maxd; i++) {
		__u8 c;

		if (i >= l)
			break;
		c = req[(t + i) & mask];
		if (c < '0' || c > '9')
			return -1;
		if (maxd >= 20 && (n > 1844674407370955161ULL || (n == 1844674407370955161ULL && c > '5')))
			return -1;
		n = n * 10 + (c - '0');
	}
	*v = n;
	return 0;
}

/* TOK_IS(s, "get"): s is the program's scratch (req[], ts, tl) and MASK its
 * buffer mask. */
#define TOK_IS(s, lit) token_is((s)->req, MASK, &(s)->ts, &(s)->tl, lit, sizeof(lit) - 1)

#endif
