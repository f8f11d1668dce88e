/* Shapes shared by bpf/kv.bpf.c and its Go loader (lab/kv), which reads them
 * through bpf2go's generated types. */
#ifndef XDPLAB_KV_H
#define XDPLAB_KV_H

#include <linux/types.h>

#define KV_KEY_MAX 250   /* memcached's KEY_MAX_LENGTH */
#define KV_KEY_SLOT 256  /* key bytes stored in each value, for collision checks */
#define KV_VAL_MAX 1024  /* upper bound of the load-time value capacity */
#define KV_NLOCKS 1024   /* stripe locks; a power of two */
#define KV_VAL_SLACK 32  /* spare bytes after data[] for 8-byte copies at its end */

/* One stored item. The map's value size is sizeof(struct kv_val) plus the
 * load-time value capacity, so data[] is sized at load time. */
struct kv_val {
	__u64 cas;     /* 0: not a live item (being deleted) */
	__u64 exptime; /* absolute unix seconds; 0: never */
	__u32 flags;
	__u32 len;     /* bytes of data */
	__u16 klen;
	__u8 slow;     /* the value lives in the Go slow path: pass every request up */
	__u8 pad[5];
	__u8 key[KV_KEY_SLOT];
	__u8 data[];
};

/* Per-CPU counters, summed by the slow path for `stats`. */
struct kv_stats {
	__u64 rx;          /* datagrams to the store's port */
	__u64 tx;          /* answered in XDP */
	__u64 pass;        /* handed to the slow path */
	__u64 drop;        /* consumed without reply (noreply) */
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

/* Operations of the control program, run by the slow path with
 * BPF_PROG_TEST_RUN so that it takes the same stripe locks as XDP. */
enum kv_ctl_op {
	KV_CTL_MARK_SLOW = 1, /* make key a slow-path key (create if absent) */
	KV_CTL_DELETE = 2,    /* remove key (slow marker or item) */
};

struct kv_ctl {
	__u32 op;
	__u32 klen;
	__u64 cas;     /* MARK_SLOW: expected cas of the current item, 0 = any */
	__u64 new_cas; /* MARK_SLOW: cas the marker carries */
	__u8 key[KV_KEY_SLOT];
};

#endif
