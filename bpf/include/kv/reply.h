/* Reply formatting into the scratch's resp[]: literal strings, decimal
 * numbers, the one-line replies of commands.
 * Part of bpf/kv.bpf.c, which includes it after its maps, its scratch
 * (struct scratch, MASK, STAT_INC, get_scratch) and its configuration:
 * not a header of its own. */
#ifndef XDPLAB_KV_REPLY_H
#define XDPLAB_KV_REPLY_H

/* ---- reply building ---- */

static __always_inline void put(struct scratch *s, __u32 *o, const char *str, __u32 n)
{
#pragma unroll
	for (__u32 i = 0; i < n; i++)
		s->resp[(*o + i) & MASK] = str[i];
	*o += n;
}

#define PUT(s, o, lit) put(s, o, lit, sizeof(lit) - 1)

static __always_inline __u32 ndigits(__u64 v)
{
	__u64 p = 10;
	__u32 n = 1;

	for (__u32 i = 0; i < 19; i++) {
		if (v < p)
			break;
		n++;
		p *= 10;
	}
	return n;
}

/* Decimal digits of v into buf at o, written from the right; no stack array,
 * since 5.10's verifier rejects variable-offset stack reads. */
#define PUT_DIGITS_T(T, buf, bufmask, at, v, n)                    \
	do {                                                        \
		T __v = (v);                                        \
		for (__u32 __i = 0; __i < 20; __i++) {              \
			if (__i >= (n))                             \
				break;                              \
			(buf)[((at) + (n) - 1 - __i) & (bufmask)] = '0' + __v % 10; \
			__v /= 10;                                  \
		}                                                   \
	} while (0)

/* 32-bit numbers (flags, lengths) divide by ten with a multiply; only
 * 64-bit ones need the slow division. */
#define PUT_DIGITS(buf, bufmask, at, v, n)                              \
	do {                                                            \
		if ((__u64)(v) <= 0xffffffffULL)                        \
			PUT_DIGITS_T(__u32, buf, bufmask, at, v, n);    \
		else                                                    \
			PUT_DIGITS_T(__u64, buf, bufmask, at, v, n);    \
	} while (0)

static __always_inline void put_u64(struct scratch *s, __u32 *o, __u64 v)
{
	WR(s->nd, ndigits(v));
	PUT_DIGITS(s->resp, MASK, *o, v, RD(s->nd));
	*o += RD(s->nd);
}

/* One-line replies: the whole reply of a command. */
static __always_inline int reply_line(__u32 slot, int which)
{
	struct scratch *s = get_scratch(slot);
	__u32 o = 0;

	if (!s)
		return ACT_PASS;
	if (RD(s->noreply))
		return ACT_DROP;
	switch (which) {
	case 0: PUT(s, &o, "STORED\r\n"); break;
	case 1: PUT(s, &o, "NOT_STORED\r\n"); break;
	case 2: PUT(s, &o, "EXISTS\r\n"); break;
	case 3: PUT(s, &o, "NOT_FOUND\r\n"); break;
	case 4: PUT(s, &o, "DELETED\r\n"); break;
	case 5: PUT(s, &o, "TOUCHED\r\n"); break;
	default: return ACT_PASS;
	}
	WR(s->resp_len, o);
	return ACT_TX;
}

enum { R_STORED, R_NOT_STORED, R_EXISTS, R_NOT_FOUND, R_DELETED, R_TOUCHED };

#endif
