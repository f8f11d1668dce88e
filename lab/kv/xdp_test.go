package kv

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplab/xdplab/lab/internal/frame"
)

var (
	testClient = netip.MustParseAddrPort("198.18.0.1:40000")
	testServer = netip.MustParseAddrPort("198.18.0.2:11211")
	// testServer and fuzzFrame's IPv6 server.
	testServerAddrs = []netip.Addr{testServer.Addr(), netip.MustParseAddr("fd00::2")}
)

func testServerPort(o *Objects) netip.AddrPort {
	return netip.AddrPortFrom(testServer.Addr(), o.cfg.Port)
}

func loadForTest(t testing.TB, cfg Config) *Objects {
	t.Helper()
	o, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	// The test frames' servers; a Server's Listen puts its own in place.
	if err := o.SetAddrs(testServerAddrs); err != nil {
		t.Fatal(err)
	}
	return o
}

// run sends one request through the XDP program and returns the action and
// the reply payload (when XDP_TX).
func run(t testing.TB, o *Objects, d frame.Datagram) (uint32, []byte) {
	t.Helper()
	ret, out := runFrame(t, o, d.Frame())
	if ret != xdpTX {
		return ret, nil
	}
	r, err := frame.Parse(out)
	if err != nil {
		t.Fatalf("reply frame: %v", err)
	}
	if r.Dst != d.Src || r.Src != d.Dst || r.ID != d.ID || r.Total != 1 || r.Seq != 0 {
		t.Fatalf("reply header: %+v for request %+v", r, d)
	}
	return ret, r.Payload
}

// runFrame runs one frame through the XDP program and returns the action
// and the frame as the program left it.
func runFrame(t testing.TB, o *Objects, in []byte) (uint32, []byte) {
	t.Helper()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+4096)}
	ret, err := o.objs.KvXdp.Run(&opts)
	if err != nil {
		t.Fatal(err)
	}
	return ret, opts.DataOut
}

func TestXDPBasic(t *testing.T) {
	o := loadForTest(t, Config{})
	for _, src := range []netip.AddrPort{testClient, netip.MustParseAddrPort("[fd00::1]:40000")} {
		dst := testServer
		if src.Addr().Is6() {
			dst = netip.MustParseAddrPort("[fd00::2]:11211")
		}
		steps := []struct{ req, want string }{
			{"get foo\r\n", "END\r\n"},
			{"set foo 5 0 3\r\nbar\r\n", "STORED\r\n"},
			{"get foo\r\n", "VALUE foo 5 3\r\nbar\r\nEND\r\n"},
			{"append foo 0 0 2\r\nxy\r\n", "STORED\r\n"},
			{"prepend foo 0 0 2\r\n<<\r\n", "STORED\r\n"},
			{"get foo nope\r\n", "VALUE foo 5 7\r\n<<barxy\r\nEND\r\n"},
			{"add foo 0 0 1\r\nz\r\n", "NOT_STORED\r\n"},
			{"set n 0 0 3\r\n100\r\n", "STORED\r\n"},
			{"decr n 1\r\n", "99\r\n"},
			{"get n\r\n", "VALUE n 0 3\r\n99 \r\nEND\r\n"},
			{"incr n 18446744073709551517\r\n", "0\r\n"},
			{"delete foo\r\n", "DELETED\r\n"},
			{"delete foo\r\n", "NOT_FOUND\r\n"},
			{"touch n 100\r\n", "TOUCHED\r\n"},
			{"set e 0 -1 1\r\nx\r\n", "STORED\r\n"},
			{"get e\r\n", "END\r\n"},
		}
		for i, st := range steps {
			act, got := run(t, o, frame.Datagram{Src: src, Dst: dst, ID: uint16(i), Payload: []byte(st.req)})
			if act != xdpTX || string(got) != st.want {
				t.Fatalf("%s %q: action %d reply %q, want %q", src, st.req, act, got, st.want)
			}
		}
		run(t, o, frame.Datagram{Src: src, Dst: dst, Payload: []byte("delete n\r\n")})
	}
}
