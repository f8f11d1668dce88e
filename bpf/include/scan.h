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

#endif
