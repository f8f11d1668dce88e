package peer

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/netlab"
)

// dial opens a connection from h's namespace.
func dial(t *testing.T, h *netlab.Host, network string, ap netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	if err := h.Do(func() (err error) {
		c, err = net.DialTimeout(network, ap.String(), 2*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// exchange sends req over TCP and reads lines until one of the ends.
func exchange(t *testing.T, c net.Conn, r *bufio.Reader, req string, ends ...string) string {
	t.Helper()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%q: read: %v (got %q)", req, err, b.String())
		}
		b.WriteString(line)
		for _, e := range ends {
			if line == e {
				return b.String()
			}
		}
	}
}

func TestMemcached(t *testing.T) {
	topo := netlab.ForTest(t, netlab.PairSpec(netlab.Options{}))
	client, kv := topo.Host("client"), topo.Host("kv")
	mc, err := StartMemcached(t.Context(), kv, MemcachedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Stop() })
	if len(mc.TCP) != 2 || len(mc.UDP) != 2 {
		t.Fatalf("endpoints: tcp %v udp %v", mc.TCP, mc.UDP)
	}

	// Set over IPv4 TCP, read back over IPv6 TCP.
	c4 := dial(t, client, "tcp", netip.AddrPortFrom(kv.IPv4(), 11211))
	if got := exchange(t, c4, bufio.NewReader(c4), "set k 5 0 2\r\nhi\r\n", "STORED\r\n", "ERROR\r\n"); got != "STORED\r\n" {
		t.Fatalf("set: %q", got)
	}
	c6 := dial(t, client, "tcp", netip.AddrPortFrom(kv.IPv6(), 11211))
	if got := exchange(t, c6, bufio.NewReader(c6), "get k\r\n", "END\r\n"); got != "VALUE k 5 2\r\nhi\r\nEND\r\n" {
		t.Fatalf("get over IPv6: %q", got)
	}

	// UDP, with memcached's 8-byte frame header (id, seq, count, reserved).
	for _, a := range []netip.Addr{kv.IPv4(), kv.IPv6()} {
		u := dial(t, client, "udp", netip.AddrPortFrom(a, 11211))
		req := binary.BigEndian.AppendUint16(nil, 42)
		req = append(req, 0, 0, 0, 1, 0, 0)
		req = append(req, "get k\r\n"...)
		if _, err := u.Write(req); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := u.Read(buf)
		if err != nil {
			t.Fatalf("UDP get via %s: %v", a, err)
		}
		// memcached 1.6 sends VALUE and END as separate datagrams.
		if n < 8 || binary.BigEndian.Uint16(buf) != 42 || !strings.HasPrefix(string(buf[8:n]), "VALUE k 5 2\r\nhi\r\n") {
			t.Fatalf("UDP get via %s: %q", a, buf[:n])
		}
	}

	if err := mc.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := mc.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if mc.Cmd.ProcessState == nil || !mc.Cmd.ProcessState.Exited() && mc.Cmd.ProcessState.String() != "signal: killed" {
		t.Errorf("memcached after Stop: %v", mc.Cmd.ProcessState)
	}
}

func TestMemcachedContextKills(t *testing.T) {
	topo := netlab.ForTest(t, netlab.PairSpec(netlab.Options{}))
	ctx, cancel := context.WithCancel(t.Context())
	mc, err := StartMemcached(ctx, topo.Host("kv"), MemcachedOptions{Port: 11311, UDPPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(mc.UDP) != 0 {
		t.Errorf("UDP endpoints with UDP off: %v", mc.UDP)
	}
	cancel()
	select {
	case <-mc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling ctx did not stop memcached")
	}
	if err := mc.Stop(); err != nil {
		t.Errorf("Stop after cancel: %v", err)
	}
}

func TestMemcachedErrors(t *testing.T) {
	topo := netlab.ForTest(t, netlab.PairSpec(netlab.Options{}))
	kv := topo.Host("kv")

	_, err := StartMemcached(t.Context(), kv, MemcachedOptions{Args: []string{"--no-such-flag"}})
	if err == nil || !strings.Contains(err.Error(), "exited during start") {
		t.Errorf("bad flag: %v", err)
	}

	t.Setenv("PATH", "")
	_, err = StartMemcached(t.Context(), kv, MemcachedOptions{Binary: "/nonexistent/memcached"})
	if err == nil || err.Error() != "memcached not found: run make deps" {
		t.Errorf("missing binary: %v", err)
	}
}

func TestNutcracker(t *testing.T) {
	topo := netlab.ForTest(t, netlab.StarSpec(2, netlab.Options{}))
	client, proxy := topo.Host("client"), topo.Host("proxy")
	var backends []string
	var mcs []*Process
	for _, kv := range topo.Backends() {
		mc, err := StartMemcached(t.Context(), kv, MemcachedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mc.Stop() })
		mcs = append(mcs, mc)
		a := kv.IPv4()
		if kv.Name == "kv2" {
			a = kv.IPv6()
		}
		backends = append(backends, netip.AddrPortFrom(a, 11211).String())
	}
	// IPv6 on the front, to exercise both families.
	listen := netip.AddrPortFrom(proxy.IfaceTo("client").IPv6.Addr(), 22122)
	nc, err := StartNutcracker(t.Context(), proxy, listen, backends, NutcrackerOptions{AutoEjectHosts: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Stop() })

	c := dial(t, client, "tcp", listen)
	r := bufio.NewReader(c)
	const keys = 40
	for i := range keys {
		req := fmt.Sprintf("set key%d 0 0 1\r\n%d\r\n", i, i%10)
		if got := exchange(t, c, r, req, "STORED\r\n", "ERROR\r\n", "SERVER_ERROR\r\n"); got != "STORED\r\n" {
			t.Fatalf("set via nutcracker: %q", got)
		}
	}
	if got := exchange(t, c, r, "get key7\r\n", "END\r\n"); got != "VALUE key7 0 1\r\n7\r\nEND\r\n" {
		t.Fatalf("get via nutcracker: %q", got)
	}
	// Ketama spread the keys over both backends.
	for i, kv := range topo.Backends() {
		bc := dial(t, client, "tcp", mcs[i].TCP[0])
		stats := exchange(t, bc, bufio.NewReader(bc), "stats\r\n", "END\r\n")
		if !strings.Contains(stats, "STAT curr_items ") || strings.Contains(stats, "STAT curr_items 0\r\n") {
			t.Errorf("%s holds no keys", kv.Name)
		}
	}

	dir := nc.dir
	if err := nc.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("config dir %s left after Stop: %v", dir, err)
	}
}

func TestNutcrackerErrors(t *testing.T) {
	topo := netlab.ForTest(t, netlab.PairSpec(netlab.Options{}))
	kv := topo.Host("kv")
	listen := netip.AddrPortFrom(kv.IPv4(), 22122)
	if _, err := StartNutcracker(t.Context(), kv, listen, []string{"nonsense"}, NutcrackerOptions{}); err == nil {
		t.Error("bad backend accepted")
	}
	if _, err := StartNutcracker(t.Context(), kv, listen, nil, NutcrackerOptions{}); err == nil {
		t.Error("no backends accepted")
	}
	if got, _ := nutcrackerServer("[fd00::2]:11211"); got != "fd00::2:11211:1" {
		t.Errorf("IPv6 backend: %q", got)
	}
	if got, _ := nutcrackerServer("198.18.2.2:11211:3 kv1"); got != "198.18.2.2:11211:3 kv1" {
		t.Errorf("weighted named backend: %q", got)
	}
	t.Setenv("PATH", "")
	_, err := StartNutcracker(t.Context(), kv, listen, []string{"198.18.1.1:11211"}, NutcrackerOptions{Binary: "/nonexistent"})
	if err == nil || err.Error() != "nutcracker not found: run make deps" {
		t.Errorf("missing binary: %v", err)
	}
}

func TestStartTimesOut(t *testing.T) {
	topo := netlab.ForTest(t, netlab.PairSpec(netlab.Options{}))
	kv := topo.Host("kv")
	// A process that runs but never listens.
	p, err := start(t.Context(), kv, "sleep", "/bin/sleep", []string{"600"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p.TCP = []netip.AddrPort{netip.AddrPortFrom(kv.IPv4(), 11211)}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err = p.waitReady(ctx, probeVersion)
	if err == nil || !strings.Contains(err.Error(), "did not answer on 198.18.1.2:11211") {
		t.Fatalf("waitReady: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("process left running after a failed start")
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("temp dir left: %v", err)
	}
}
