/* Shapes shared by bpf/kv.bpf.c and its Go loader (lab/kv), which reads them
 * through bpf2go's generated types. */
#ifndef XDPLAB_KV_H
#define XDPLAB_KV_H

#include <linux/types.h>

#include "pkt.h"

/* The sizes below may be overridden (-D) only by the variants that
 * lab/verifier/limits compiles to find what still loads on each kernel. */
#ifndef KV_KEY_MAX
#define KV_KEY_MAX 250   /* memcached's KEY_MAX_LENGTH */
#endif
#ifndef KV_KEY_SLOT
#define KV_KEY_SLOT 256  /* key bytes stored in each value, for collision checks */
#endif
#ifndef KV_VAL_MAX
#define KV_VAL_MAX 1024  /* upper bound of the load-time value capacity */
#endif
#ifndef GET_KEYS_MAX
#define GET_KEYS_MAX 24  /* keys of one get served in XDP */
#endif
#define KV_NLOCKS 1024   /* stripe locks; a power of two */
#define KV_VAL_SLACK 32  /* spare bytes after data[] for 8-byte copies at its end */
#define RELTIME_MAX 2592000 /* memcached's REALTIME_MAXDELTA: 30 days */

/* The limits the Go loader needs, as an enum so that BTF carries them to
 * bpf2go's generated constants (lab/kv): Go never retypes them. The
 * program's BTF holds the enum through kv.bpf.c's unused_kv_limit; the
 * variants' tests (lab/verifier/limits/kvvariants) read it there to see
 * that each object has the size its name says. */
enum kv_limit {
	KV_LIMIT_KEY_MAX = KV_KEY_MAX,
	KV_LIMIT_VAL_MAX = KV_VAL_MAX,
	KV_LIMIT_VAL_SLACK = KV_VAL_SLACK,
	KV_LIMIT_PAYLOAD_MAX = PAYLOAD_MAX, /* pkt.h's, for the slow path's test runs */
	KV_LIMIT_RELTIME_MAX = RELTIME_MAX, /* exptimes up to it are relative */
	KV_LIMIT_GET_KEYS_MAX = GET_KEYS_MAX,
};

/* One stored item. The map's value size is sizeof(struct kv_val) plus the
 * load-time value capacity, so data[] is sized at load time. */
struct kv_val {
	__u64 cas;     /* 0: not a live item (being deleted) */
	__u64 exptime; /* absolute unix seconds; 0: never */
	__u32 flags;
	__u32 len;     /* bytes of data */
	__u16 klen;
	__u8 slow;     /* the value lives in the Go slow path: pass every request up */
	__u8 pad;
	/* A sequence count for GETs, which read without the stripe lock:
	 * odd while a writer (holding the lock) changes the item, bumped to
	 * even after. A reader that sees it odd, or changed across its copy,
	 * tries again or passes (bpf/include/kv/item.h). */
	__u32 seq;
	__u8 key[KV_KEY_SLOT];
	__u8 data[];
};

/* Per-CPU counters, summed by the slow path for `stats`. */
struct kv_stats {
	__u64 rx;          /* datagrams to the store's addresses and port */
	__u64 tx;          /* answered in XDP */
	__u64 pass;        /* handed to the slow path */
	__u64 drop;        /* consumed without reply (noreply) */
	__u64 reflect_drop; /* refused: from a port that could start a reply loop */
	__u64 rate_drop;   /* replies dropped: over their source's byte rate (udp_rate) */
	__u64 udp_too_large; /* UDP replies refused as over the cap (counted by the slow path) */
	__u64 cmd_get;     /* keys requested by get/gets */
	__u64 get_hits;
	__u64 get_misses;
	__u64 get_expired;
	__u64 cmd_set;     /* storage commands */
	__u64 cmd_touch;
	__u64 touch_hits;
	__u64 touch_misses;
	__u64 delete_hits;
	__u64 delete_misses;
	__u64 incr_hits;
	__u64 incr_misses;
	__u64 decr_hits;
	__u64 decr_misses;
	__u64 cas_hits;
	__u64 cas_misses;
	__u64 cas_badval;
	__u64 total_items; /* successful stores */
	__u64 inserts;     /* new map entries created */
	__u64 deletes;     /* map entries removed (delete, expiry) */
};

/* Operations of the control program, which the slow path runs with
 * BPF_PROG_TEST_RUN on a struct kv_ctl so that its reads and writes take the
 * same stripe locks as XDP. */
enum kv_ctl_op {
	KV_CTL_LOAD = 1,   /* copy the key's entry out (item or slow marker) */
	KV_CTL_STORE = 2,  /* write an item (data in data[]) if cond holds */
	KV_CTL_MARK = 3,   /* make the key a slow-path key if cond holds */
	KV_CTL_DELETE = 4, /* make the key absent if cond holds */
};

enum kv_ctl_cond {
	KV_COND_ANY = 0,
	KV_COND_ABSENT = 1, /* no live item and no marker */
	KV_COND_CAS = 2,    /* the entry's cas equals cas */
};

enum kv_ctl_result {
	KV_CTL_OK = 0,
	KV_CTL_FAILED = 1, /* cond did not hold */
	KV_CTL_ABSENT = 2, /* LOAD: no live entry */
	KV_CTL_ERROR = 3,  /* malformed request or map full */
	KV_CTL_RETRY = 4,  /* the element was evicted under us: run it again */
};

/* The enums are the fields' types so that BTF carries them, and with it
 * bpf2go's Go constants (lab/kv): Go never retypes them. Each is 4 bytes. */
struct kv_ctl {
	enum kv_ctl_op op;
	enum kv_ctl_cond cond;
	enum kv_ctl_result result; /* out */
	__u32 klen;
	__u64 cas;     /* in: for KV_COND_CAS; out (LOAD): the entry's cas */
	__u64 new_cas; /* in: cas to give (0: a fresh one); out: the cas given */
	__u64 exptime; /* absolute unix seconds, 0 never */
	__u64 now;     /* unix seconds the caller judges expiry by */
	__u32 flags;
	__u32 len;
	__u32 slow;    /* out (LOAD): the entry is a slow-path marker */
	__u32 pad;
	__u8 key[KV_KEY_SLOT];
	__u8 data[KV_VAL_MAX + KV_VAL_SLACK];
};

#endif
