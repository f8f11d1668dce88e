package peer_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

// A store test: a client — kv pair, memcached on kv as the oracle, and the
// program under test attached to kv's interface. PeerXDP puts XDP_PASS on
// the client's end so that the program's XDP_TX replies arrive.
func Example() {
	var t *testing.T // the test's *testing.T
	var prog *ebpf.Program

	topo := netlab.ForTest(t, netlab.PairSpec(netlab.Options{PeerXDP: true}))
	client, kv := topo.Host("client"), topo.Host("kv")

	mc, err := peer.StartMemcached(t.Context(), kv, peer.MemcachedOptions{Port: 11311})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Stop() })

	l, err := netlab.AttachXDP(kv, kv.Dev(), prog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	_ = client.Do(func() error {
		// Sockets opened here live in the client's namespace.
		fmt.Println("store at", kv.IPv4(), kv.IPv6(), "memcached at", mc.UDP)
		return nil
	})
}
