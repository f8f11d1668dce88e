package kv

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"golang.org/x/sys/unix"
)

// TestUDPZeroChecksum: with Config.UDPZeroChecksum, IPv4 replies from XDP
// carry a UDP checksum of 0 and IPv6 ones a right one; without it both
// carry a right one (frame.Parse checks any non-zero checksum).
func TestUDPZeroChecksum(t *testing.T) {
	for _, zero := range []bool{false, true} {
		o := loadForTest(t, Config{UDPZeroChecksum: zero})
		for _, c := range []struct{ src, dst string }{{"198.18.0.1:40000", "198.18.0.2:11211"}, {"[fd00::1]:40000", "[fd00::2]:11211"}} {
			d := frame.Datagram{Src: netip.MustParseAddrPort(c.src), Dst: netip.MustParseAddrPort(c.dst), ID: 7}
			for _, req := range []string{setReq("csum", 100), getReq("csum"), getReq("nokey")} {
				d.Payload = []byte(req)
				act, out := runFrame(t, o, d.Frame())
				if act != xdpTX {
					t.Fatalf("zero %v, %s, %.20q: action %d, want XDP_TX", zero, c.dst, req, act)
				}
				if _, err := frame.Parse(out); err != nil {
					t.Fatalf("zero %v, %s, %.20q: %v", zero, c.dst, req, err)
				}
				v6 := d.Dst.Addr().Is6()
				ipl := frame.IPv4Len
				if v6 {
					ipl = frame.IPv6Len
				}
				sum := binary.BigEndian.Uint16(out[frame.EthLen+ipl+6:])
				if want0 := zero && !v6; (sum == 0) != want0 {
					t.Errorf("zero %v, %s, %.20q: UDP checksum %#04x", zero, c.dst, req, sum)
				}
			}
		}
	}
}

// TestCopyLoops: the copy loops that kernels before 5.18 run (no
// bpf_xdp_load_bytes/store_bytes) give the replies the helpers give.
func TestCopyLoops(t *testing.T) {
	testCopyLoops = true
	loops := loadForTest(t, Config{})
	testCopyLoops = false
	fast := loadForTest(t, Config{})
	if loops.xdpBytes {
		t.Fatal("testCopyLoops did not take")
	}
	for _, c := range []struct{ src, dst string }{{"198.18.0.1:40000", "198.18.0.2:11211"}, {"[fd00::1]:40000", "[fd00::2]:11211"}} {
		d := frame.Datagram{Src: netip.MustParseAddrPort(c.src), Dst: netip.MustParseAddrPort(c.dst), ID: 9}
		for _, req := range []string{setReq("k", 1), setReq("loop:key:000001", 100), setReq("loop:key:000002", 1000),
			getReq("k"), getReq("loop:key:000001"), getReq("loop:key:000002", "k", "none"), "incr n 1\r\n", "delete k\r\n"} {
			d.Payload = []byte(req)
			a1, r1 := run(t, loops, d)
			a2, r2 := run(t, fast, d)
			if a1 != a2 || string(r1) != string(r2) {
				t.Errorf("%s %.30q: loops %d %.60q, helpers %d %.60q", c.dst, req, a1, r1, a2, r2)
			}
		}
	}
}

// TestOwnAddrForgotten: each CPU remembers the last own address it found;
// SetAddrs removing that address makes the next frame to it pass.
func TestOwnAddrForgotten(t *testing.T) {
	// One CPU for all runs, so the second meets what the first remembered
	// (the thread stays locked: it ends with the test, affinity and all).
	runtime.LockOSThread()
	var cpus unix.CPUSet
	cpus.Set(0)
	if err := unix.SchedSetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
	o := loadForTest(t, Config{})
	d := frame.Datagram{Src: netip.MustParseAddrPort("198.18.0.1:40000"), Dst: netip.MustParseAddrPort("198.18.0.2:11211"),
		ID: 3, Payload: []byte(getReq("nokey"))}
	if act, _ := run(t, o, d); act != 3 {
		t.Fatalf("to an own address: action %d, want XDP_TX", act)
	}
	if err := o.SetAddrs([]netip.Addr{netip.MustParseAddr("198.18.0.99")}); err != nil {
		t.Fatal(err)
	}
	if act, _ := run(t, o, d); act != 2 {
		t.Fatalf("to an address no longer the store's: action %d, want XDP_PASS", act)
	}
	if err := o.SetAddrs(testServerAddrs); err != nil {
		t.Fatal(err)
	}
	if act, _ := run(t, o, d); act != 3 {
		t.Fatalf("to an own address again: action %d, want XDP_TX", act)
	}
}
