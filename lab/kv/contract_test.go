package kv

import (
	"testing"

	"github.com/xdplab/xdplab/lab/memcache"
)

// TestContractWithCodec holds the limits the store's C takes as its own
// (enum kv_limit in bpf/include/kv.h, generated into kv_bpfel.go) to the
// memcached codec's, which the slow path applies: the two must agree, or
// XDP and the slow path would answer the same request differently.
func TestContractWithCodec(t *testing.T) {
	if int(kvKvLimitKV_LIMIT_KEY_MAX) != memcache.MaxKeyLen {
		t.Errorf("KV_KEY_MAX is %d, memcache.MaxKeyLen %d", kvKvLimitKV_LIMIT_KEY_MAX, memcache.MaxKeyLen)
	}
	// memcached's REALTIME_MAXDELTA, which the codec's callers apply.
	if kvKvLimitKV_LIMIT_RELTIME_MAX != 30*24*60*60 {
		t.Errorf("RELTIME_MAX is %d, memcached's is 30 days", kvKvLimitKV_LIMIT_RELTIME_MAX)
	}
	if frameLen != memcache.HeaderLen {
		t.Errorf("frameLen is %d, memcache.HeaderLen %d", frameLen, memcache.HeaderLen)
	}
	// A reply the store sends from XDP fits in what it takes in.
	if defaultReplyMax > payloadMax {
		t.Errorf("defaultReplyMax %d exceeds PAYLOAD_MAX %d", defaultReplyMax, payloadMax)
	}
}
