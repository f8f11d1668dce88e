package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
)

// TestXDPReflectionPorts: a request from a port a reply loop could run
// through (below 1024, memcached's, the proxy's own, here both 11211) is
// dropped and counted, not forwarded to make a backend answer it; the
// ports next to them are forwarded.
func TestXDPReflectionPorts(t *testing.T) {
	l := newXDPLab(t)
	for _, c := range []struct {
		port    uint16
		refused bool
	}{{1, true}, {53, true}, {1023, true}, {11211, true}, {1024, false}, {11212, false}, {40000, false}} {
		before, err := l.o.Stats()
		if err != nil {
			t.Fatal(err)
		}
		in := frame.Datagram{SrcMAC: l.client.MAC, DstMAC: l.fromCli.MAC, Src: netip.AddrPortFrom(l.client.IPv4.Addr(), c.port),
			Dst: netip.AddrPortFrom(l.fromCli.IPv4.Addr(), 11211), Total: 1, Payload: []byte("get k\r\n")}.Frame()
		act, _ := l.run(l.fromCli, in)
		after, err := l.o.Stats()
		if err != nil {
			t.Fatal(err)
		}
		dropped := after.ReflectDrop - before.ReflectDrop
		if c.refused && (act != xdpDrop || dropped != 1) {
			t.Errorf("from port %d: action %d, reflect drops +%d; want XDP_DROP counted", c.port, act, dropped)
		}
		if !c.refused && (act != xdpRedirect || dropped != 0) {
			t.Errorf("from port %d: action %d, reflect drops +%d; want it forwarded", c.port, act, dropped)
		}
	}
}

// TestSlowPathRefuses: the slow path answers neither a datagram from a
// port a loop could run through, nor one from a backend's own address and
// port, nor one holding another server's reply (memcache.Unanswerable),
// and still answers the same clients' requests.
func TestSlowPathRefuses(t *testing.T) {
	// 127.0.0.3 is local too: the backend's address, which the test
	// sends from.
	kv := netip.MustParseAddrPort("127.0.0.3:12345")
	b := Backend{Server: Server{Host: kv.Addr().String(), Port: kv.Port(), Weight: 1}, IPv4: kv.Addr()}
	ring, err := NewRing([]Server{b.Server}, []bool{false})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSlowPath([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, []Backend{b}, ring, SlowConfig{})
	if err != nil {
		t.Fatal(err)
	}
	background.Serve(t, s.Serve)
	own := s.Addrs()[0]
	send := func(from netip.AddrPort, payload string) string {
		t.Helper()
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(from))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WriteToUDPAddrPort(append(memcache.AppendHeader(nil, memcache.Header{RequestID: 9, Total: 1}), payload...), own); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil || n < memcache.HeaderLen {
			return ""
		}
		return string(buf[memcache.HeaderLen:n])
	}
	lo := netip.MustParseAddr("127.0.0.1")
	// 127.0.0.2 is local too: the only way to send from the proxy's own port.
	for _, from := range []netip.AddrPort{netip.AddrPortFrom(lo, 1023), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), own.Port()), kv} {
		if r := send(from, "version\r\n"); r != "" {
			t.Errorf("version from %s: %q, want no reply", from, r)
		}
	}
	for _, p := range []string{"ERROR\r\n", "END\r\n", "SERVER_ERROR Connection refused\r\n", "VERSION xdplab-proxy\r\n"} {
		if r := send(netip.AddrPortFrom(lo, 0), p); r != "" {
			t.Errorf("%q: %q, want no reply", p, r)
		}
	}
	for _, from := range []netip.AddrPort{netip.AddrPortFrom(lo, 0), netip.AddrPortFrom(kv.Addr(), kv.Port()+1)} {
		if r := send(from, "version\r\n"); r != string(VersionReply) {
			t.Errorf("version from %s, an ordinary client: %q", from, r)
		}
	}
	if st := s.Stats(); st.Refused != 7 {
		t.Errorf("refused %d, want 7", st.Refused)
	}
}
