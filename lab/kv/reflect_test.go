package kv

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
	"golang.org/x/sys/unix"
)

// TestXDPReflectionPorts: XDP drops, and counts, requests from the ports a
// reply loop could run through, and answers the ports next to them; the
// slow path's rule (memcache.Unanswerable) says the same of each.
func TestXDPReflectionPorts(t *testing.T) {
	const own = 11300
	o := loadForTest(t, Config{Port: own})
	srv := NewServer(o)
	dst := testServerPort(o)
	get := []byte("get foo\r\n")
	for _, c := range []struct {
		port    uint16
		refused bool
	}{{1, true}, {53, true}, {1023, true}, {11211, true}, {own, true}, {1024, false}, {11210, false}, {own + 1, false}, {40000, false}} {
		src := netip.AddrPortFrom(testClient.Addr(), c.port)
		before := (&vethLab{srv: srv}).stat(t, "reflect_drop")
		act, reply := run(t, o, frame.Datagram{Src: src, Dst: dst, Payload: get})
		dropped := (&vethLab{srv: srv}).stat(t, "reflect_drop") - before
		if c.refused && (act != xdpDrop || dropped != 1) {
			t.Errorf("from port %d: action %d, reflect_drop +%d; want XDP_DROP counted", c.port, act, dropped)
		}
		if !c.refused && (act != xdpTX || string(reply) != "END\r\n" || dropped != 0) {
			t.Errorf("from port %d: action %d reply %q, reflect_drop +%d; want END", c.port, act, reply, dropped)
		}
		if u := memcache.Unanswerable(c.port, own, get); u != c.refused {
			t.Errorf("memcache.Unanswerable(%d, %d) = %v, XDP's rule says %v", c.port, own, u, c.refused)
		}
	}
}

// TestReflectionLoop: one datagram spoofed from another server's port
// (memcached's 11211, or a second store's own) must not set the servers
// answering each other. Store A serves on host a; on host b, linked to a,
// serves memcached (port 11211) or a second store (port 11300, so that only
// the reply rule, not the port rule, can stop it). A raw socket on b sends
// A one "get" claiming to come from b's server; A's reply goes to that
// server, which would answer it, and so on. Over a short window A must see
// that one datagram and no more.
func TestReflectionLoop(t *testing.T) {
	for _, peerIs := range []string{"memcached", "store"} {
		t.Run(peerIs, func(t *testing.T) {
			topo := netlab.ForTest(t, netlab.Spec{
				Hosts: []netlab.HostSpec{{Name: "a", Role: "kv"}, {Name: "b", Role: "kv", XDPPass: peerIs == "memcached"}},
				Links: []netlab.LinkSpec{{A: "a", B: "b"}},
			})
			a, b := topo.Host("a"), topo.Host("b")
			storeA := startStore(t, a, Config{Port: labPort})
			peerPort := uint16(labPort)
			var storeB *vethLab
			if peerIs == "memcached" {
				mcd, err := peer.StartMemcached(context.Background(), b, peer.MemcachedOptions{Port: labPort, Threads: 1})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { mcd.Stop() })
			} else {
				peerPort = 11300
				storeB = startStore(t, b, Config{Port: peerPort})
			}
			rx0 := storeA.stat(t, "xdp_rx")
			spoofed := frame.Datagram{Src: netip.AddrPortFrom(b.IPv4(), peerPort), Dst: netip.AddrPortFrom(a.IPv4(), labPort),
				ID: 7, Payload: []byte("get k\r\n")}
			sendRawIPv4(t, b, spoofed)
			// Long enough for thousands of round trips on a veth, even
			// under emulation; a loop never stops by itself.
			time.Sleep(500 * time.Millisecond)
			if rx := storeA.stat(t, "xdp_rx") - rx0; rx != 1 {
				t.Errorf("store A received %d datagrams after one spoofed request, want 1 (a reply loop)", rx)
			}
			if storeB == nil {
				if d := storeA.stat(t, "reflect_drop"); d != 1 {
					t.Errorf("store A reflect_drop %d, want 1 (memcached's port)", d)
				}
				return
			}
			// A answered, as the port was nobody's to refuse; B got the
			// reply and left it unanswered.
			if d := storeA.stat(t, "reflect_drop"); d != 0 {
				t.Errorf("store A reflect_drop %d, want 0", d)
			}
			if rx, d := storeB.stat(t, "xdp_rx"), storeB.stat(t, "reflect_drop"); rx != 1 || d != 1 {
				t.Errorf("store B xdp_rx %d reflect_drop %d, want 1 and 1 (A's reply, refused)", rx, d)
			}
		})
	}
}

// startStore loads a store, serves its slow path in h and attaches its XDP
// program to h's first interface, all undone at the test's end.
func startStore(t *testing.T, h *netlab.Host, cfg Config) *vethLab {
	t.Helper()
	l := &vethLab{kv: h, o: loadForTest(t, cfg)}
	l.srv = NewServer(l.o)
	if err := h.Do(func() error { return l.srv.Listen("") }); err != nil {
		t.Fatal(err)
	}
	background.Serve(t, l.srv.Serve)
	lk, err := netlab.AttachXDP(h, h.Dev(), l.o.Program())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lk.Close() })
	return l
}

// sendRawIPv4 sends d's IPv4 packet, source and all as d says, from a raw
// socket in h: a spoofed source port, which a UDP socket cannot give when
// the port is in use.
func sendRawIPv4(t *testing.T, h *netlab.Host, d frame.Datagram) {
	t.Helper()
	err := h.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, d.Frame()[frame.EthLen:], 0, &unix.SockaddrInet4{Addr: d.Dst.Addr().As4()})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSlowPathTokenRemote: a frame from the network that carries the slow
// path's token (16 bits, so a sender can try them all) is still an
// ordinary request, counted as traffic; only the slow path's own runs
// through BPF_PROG_TEST_RUN, on loopback, get its scratch slot.
func TestSlowPathTokenRemote(t *testing.T) {
	l := newVethLab(t, Config{}, false)
	r := &rawUDP{c: l.dialRaw(t, l.storeAddr(false))}
	// The same exchange without and with the token: the same count.
	var rx [2]uint64
	for i, reserved := range []uint16{0, l.o.token} {
		rx0 := l.stat(t, "xdp_rx")
		got, err := r.exchange(func(id uint16) [][]byte {
			return [][]byte{append(frameHdr(id, 0, 1, reserved), "get k\r\n"...)}
		})
		if err != nil || string(got) != "END\r\n" {
			t.Fatalf("get, reserved %#x: %q %v", reserved, got, err)
		}
		rx[i] = l.stat(t, "xdp_rx") - rx0
	}
	if rx[0] != rx[1] {
		t.Errorf("xdp_rx +%d for a get with the slow path's token, +%d without: XDP took a datagram from the network for the slow path's own", rx[1], rx[0])
	}
	// The slow path's own runs keep their slot: a TCP set goes through XDP
	// (viaXDP) and is not counted as XDP traffic, on every kernel the
	// matrix runs, which proves test runs arrive on loopback there.
	rx0 := l.stat(t, "xdp_rx")
	tcp := l.dial(t, "tcp", l.storeAddr(false))
	ctx, cancel := context.WithTimeout(context.Background(), replyWait)
	defer cancel()
	if got, err := tcp.Do(ctx, []byte("set k 0 0 1\r\nx\r\n")); err != nil || string(got) != "STORED\r\n" {
		t.Fatalf("TCP set: %q %v", got, err)
	}
	if rx := l.stat(t, "xdp_rx") - rx0; rx != 0 {
		t.Errorf("xdp_rx +%d after a TCP set: the slow path's run through XDP was counted as traffic (not on loopback?)", rx)
	}
	if err := l.kv.Do(func() error { _, _, err := l.o.Attach("lo", ModeGeneric); return err }); err == nil {
		t.Error("the store attached to loopback")
	}
}

// TestXDPOnlyOwnAddresses: XDP answers frames to the addresses it serves,
// and passes untouched those to any other (transit), broadcast or
// multicast address, uncounted.
func TestXDPOnlyOwnAddresses(t *testing.T) {
	o := loadForTest(t, Config{})
	srv := NewServer(o)
	get := []byte("get foo\r\n")
	for _, c := range []struct {
		dst  string
		ours bool
	}{
		{"198.18.0.2", true}, {"fd00::2", true},
		{"198.18.0.3", false}, {"255.255.255.255", false}, {"198.18.0.255", false}, {"224.0.0.1", false},
		{"fd00::3", false}, {"ff02::1", false},
	} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(c.dst), o.cfg.Port)
		src := testClient
		if dst.Addr().Is6() {
			src = netip.MustParseAddrPort("[fd00::1]:40000")
		}
		rx0 := (&vethLab{srv: srv}).stat(t, "xdp_rx")
		act, reply := run(t, o, frame.Datagram{Src: src, Dst: dst, Payload: get})
		rx := (&vethLab{srv: srv}).stat(t, "xdp_rx") - rx0
		if c.ours && (act != xdpTX || string(reply) != "END\r\n" || rx != 1) {
			t.Errorf("to %s: action %d reply %q rx +%d, want END", c.dst, act, reply, rx)
		}
		if !c.ours && (act != xdpPass || rx != 0) {
			t.Errorf("to %s: action %d rx +%d, want XDP_PASS uncounted", c.dst, act, rx)
		}
	}
}

// TestXDPFollowsAddresses: a store listening on every address answers in
// XDP on one added after it started, once its slow path has seen it.
func TestXDPFollowsAddresses(t *testing.T) {
	l := newVethLab(t, Config{}, false)
	added := netip.MustParseAddr("198.18.1.200")
	ip := func(verb string) error {
		return l.kv.Command("ip", "addr", verb, added.String()+"/32", "dev", l.kv.Dev()).Run()
	}
	if err := ip("add"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ip("del") })
	if err := l.client.Command("ip", "route", "add", added.String()+"/32", "dev", l.client.Dev()).Run(); err != nil {
		t.Fatal(err)
	}
	udp := l.dial(t, "udp", netip.AddrPortFrom(added, labPort).String())
	// The slow path answers from the address asked, not the one the route
	// prefers (the connected client would drop that reply).
	if r, err := doCtx(udp, "version\r\n"); err != nil || !strings.HasPrefix(r, "VERSION ") {
		t.Fatalf("version to the added address: %q %v", r, err)
	}
	// Wait for the slow path's next look at the addresses.
	deadline := time.Now().Add(replyWait)
	var v uint8
	for l.o.objs.OwnAddrs.Lookup(added.Unmap().As16(), &v) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the store never took up an address added after it started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tx0 := l.stat(t, "xdp_tx")
	if r, err := doCtx(udp, "get x\r\n"); err != nil || r != "END\r\n" {
		t.Fatalf("get to the added address: %q %v", r, err)
	}
	if tx := l.stat(t, "xdp_tx") - tx0; tx != 1 {
		t.Errorf("xdp_tx +%d for a get to the added address, want XDP's answer", tx)
	}
}

// TestXDPFrameChecks: a request in a frame the kernel would not take as
// this host's (a group MAC address, a bad IP version or IPv4 header
// checksum, lengths that do not fit) is not answered: it passes untouched,
// uncounted.
func TestXDPFrameChecks(t *testing.T) {
	o := loadForTest(t, Config{})
	srv := NewServer(o)
	for _, v6 := range []bool{false, true} {
		src, dst := testClient, testServerPort(o)
		if v6 {
			src, dst = netip.MustParseAddrPort("[fd00::1]:40000"), netip.AddrPortFrom(netip.MustParseAddr("fd00::2"), o.cfg.Port)
		}
		good := frame.Datagram{Src: src, Dst: dst, Payload: []byte("get foo\r\n")}.Frame()
		if act, _ := runFrame(t, o, good); act != xdpTX {
			t.Fatalf("v6 %v: the good frame: action %d", v6, act)
		}
		for _, m := range frame.Malformed(v6) {
			in := bytes.Clone(good)
			m.Apply(in)
			rx0 := (&vethLab{srv: srv}).stat(t, "xdp_rx")
			act, out := runFrame(t, o, in)
			if rx := (&vethLab{srv: srv}).stat(t, "xdp_rx") - rx0; act != xdpPass || !bytes.Equal(in, out) || rx != 0 {
				t.Errorf("v6 %v, %s: action %d (frame changed: %v), rx +%d; want XDP_PASS untouched, uncounted", v6, m.Name, act, !bytes.Equal(in, out), rx)
			}
		}
	}
}
