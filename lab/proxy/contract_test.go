package proxy

import (
	"testing"

	"github.com/xdplab/xdplab/lab/memcache"
)

// TestContractWithCodec holds the limits the proxy's C routes by (enum
// proxy_limit in bpf/proxy.bpf.c, generated into proxy_bpfel.go) to the
// memcached codec's, which the slow path applies.
func TestContractWithCodec(t *testing.T) {
	if KeyMax != memcache.MaxKeyLen {
		t.Errorf("KEY_MAX is %d, memcache.MaxKeyLen %d", KeyMax, memcache.MaxKeyLen)
	}
	if BackendsMax > int(proxyProxyLimitPROXY_BUCKET_MIXED) {
		t.Errorf("BACKENDS_MAX %d reaches BUCKET_MIXED %d: a backend index would read as a mixed bucket", BackendsMax, proxyProxyLimitPROXY_BUCKET_MIXED)
	}
}
