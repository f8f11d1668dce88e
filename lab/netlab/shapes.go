package netlab

import (
	"fmt"
	"os"
	"testing"
)

// Options tune the ready-made topologies.
type Options struct {
	// Prefix: empty means NewPrefix().
	Prefix string
	// PeerXDP attaches XDP_PASS to the ends facing the program under test
	// (the store's client in a pair; the client and the backends in a
	// star), so its XDP_TX/XDP_REDIRECT frames get delivered.
	PeerXDP bool
	// KeepChecksumOffload: see Spec.
	KeepChecksumOffload bool
}

// PairSpec is the store-only topology: hosts "client" (role "client") and
// "kv" (role "kv") joined by one link (198.18.1.1 — 198.18.1.2,
// fd00:0:0:1::1 — fd00:0:0:1::2).
func PairSpec(o Options) Spec {
	return Spec{
		Prefix:              o.Prefix,
		Hosts:               []HostSpec{{Name: "client", Role: "client", XDPPass: o.PeerXDP}, {Name: "kv", Role: "kv"}},
		Links:               []LinkSpec{{A: "client", B: "kv"}},
		KeepChecksumOffload: o.KeepChecksumOffload,
	}
}

// StarSpec is client — proxy — kv1..kvN: the proxy (role "proxy",
// forwarding on) has a separate veth to the client (link 1) and to each
// backend kvI (link I+1, role "kv"), and the client and backends route
// everything through it, so the client reaches a backend with or without an
// XDP program on the proxy. One veth per neighbour, not a bridge, lets the
// proxy's XDP program XDP_TX replies to the client and XDP_REDIRECT requests
// straight to a backend's interface.
func StarSpec(backends int, o Options) Spec {
	s := Spec{
		Prefix: o.Prefix,
		Hosts: []HostSpec{
			{Name: "client", Role: "client", Gateway: "proxy", XDPPass: o.PeerXDP},
			{Name: "proxy", Role: "proxy", Forward: true},
		},
		Links:               []LinkSpec{{A: "proxy", B: "client"}},
		KeepChecksumOffload: o.KeepChecksumOffload,
	}
	for i := 1; i <= backends; i++ {
		kv := fmt.Sprintf("kv%d", i)
		s.Hosts = append(s.Hosts, HostSpec{Name: kv, Role: "kv", Gateway: "proxy", XDPPass: o.PeerXDP})
		s.Links = append(s.Links, LinkSpec{A: "proxy", B: kv})
	}
	return s
}

// NewPair builds PairSpec(o).
func NewPair(o Options) (*Topology, error) { return New(PairSpec(o)) }

// NewStar builds StarSpec(backends, o).
func NewStar(backends int, o Options) (*Topology, error) { return New(StarSpec(backends, o)) }

// Backends returns a star's kv hosts in order.
func (t *Topology) Backends() []*Host {
	var hs []*Host
	for _, h := range t.Hosts {
		if h.Role == "kv" {
			hs = append(hs, h)
		}
	}
	return hs
}

// ForTest builds spec for a test, skipping the test when not root, and
// removes the topology when the test ends, pass or fail.
func ForTest(tb testing.TB, spec Spec) *Topology {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("netlab: needs root")
	}
	t, err := New(spec)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Error(err)
		}
	})
	return t
}
