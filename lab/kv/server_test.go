package kv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
)

// startLoopback serves the slow path on 127.0.0.1 (no XDP attached), so
// every request takes the Go path on the same maps XDP uses.
func startLoopback(t *testing.T, cfg Config) (*Objects, *Server, string) {
	t.Helper()
	o, s, addr, _ := serveLoopback(t, cfg)
	return o, s, addr
}

// serveLoopback is startLoopback that also returns stop, which ends Serve
// and waits for it (it also runs when the test ends).
func serveLoopback(t *testing.T, cfg Config) (*Objects, *Server, string, func()) {
	t.Helper()
	if cfg.Port == 0 {
		// Below the ephemeral range (32768..60999 by default), where a
		// client's local port could hold the address.
		cfg.Port = uint16(20000 + rand.IntN(12000))
	}
	o := loadForTest(t, cfg)
	s := NewServer(o)
	if err := s.Listen("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// No frame reaches XDP on loopback; the tests run test frames (run).
	if err := o.SetAddrs(testServerAddrs); err != nil {
		t.Fatal(err)
	}
	stop := background.Serve(t, s.Serve)
	_, tcp := s.Addrs()
	return o, s, tcp.String(), stop
}

func do(t *testing.T, c *memcache.Client, req string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Do(ctx, []byte(req))
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	return string(r)
}

// TestSlowPathSharesItemsWithXDP checks the two paths see one store: what
// TCP writes XDP serves, what XDP writes TCP reads, and values too large for
// the kernel slot move to the slow path and back.
func TestSlowPathSharesItemsWithXDP(t *testing.T) {
	o, _, addr := startLoopback(t, Config{MaxValue: 64})
	c, err := memcache.DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	xdp := func(req string) (uint32, string) {
		act, r := run(t, o, frame.Datagram{Src: testClient, Dst: testServerPort(o), Payload: []byte(req)})
		return act, string(r)
	}
	big := strings.Repeat("b", 100)

	if got := do(t, c, "set k 1 0 3\r\nabc\r\n"); got != "STORED\r\n" {
		t.Fatalf("tcp set: %q", got)
	}
	if act, got := xdp("get k\r\n"); act != xdpTX || got != "VALUE k 1 3\r\nabc\r\nEND\r\n" {
		t.Fatalf("xdp get after tcp set: %d %q", act, got)
	}
	if act, got := xdp("set n 0 0 2\r\n41\r\n"); act != xdpTX || got != "STORED\r\n" {
		t.Fatalf("xdp set: %d %q", act, got)
	}
	if got := do(t, c, "incr n 1\r\n"); got != "42\r\n" {
		t.Fatalf("tcp incr: %q", got)
	}
	// Grow k past the slot: the slow path takes it over.
	if got := do(t, c, fmt.Sprintf("append k 0 0 %d\r\n%s\r\n", len(big), big)); got != "STORED\r\n" {
		t.Fatalf("tcp append: %q", got)
	}
	if act, _ := xdp("get k\r\n"); act != xdpPass {
		t.Fatalf("xdp served a slow-path key: action %d", act)
	}
	if got := do(t, c, "get k\r\n"); got != "VALUE k 1 103\r\nabc"+big+"\r\nEND\r\n" {
		t.Fatalf("tcp get big: %q", got)
	}
	// A small value takes it back into the kernel.
	if got := do(t, c, "set k 2 0 1\r\nz\r\n"); got != "STORED\r\n" {
		t.Fatalf("tcp set small: %q", got)
	}
	if act, got := xdp("gets k\r\n"); act != xdpTX || !strings.HasPrefix(got, "VALUE k 2 1 ") {
		t.Fatalf("xdp get after shrink: %d %q", act, got)
	}
	for _, st := range []struct{ req, want string }{
		{"set x 0 0 1\r\na\r\n", "STORED\r\n"},
		{"incr x 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"},
		{"set x 0 0 3\r\n 7 \r\n", "STORED\r\n"},
		{"incr x 5\r\n", "12\r\n"},
		{"get x\r\n", "VALUE x 0 3\r\n12 \r\nEND\r\n"},
		{"delete x\r\n", "DELETED\r\n"},
		{"bogus\r\n", "ERROR\r\n"},
		{"version\r\n", "VERSION " + Version + "\r\n"},
	} {
		if got := do(t, c, st.req); got != st.want {
			t.Errorf("%q: got %q want %q", st.req, got, st.want)
		}
	}
	st, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st["curr_items"] != "2" || st["cmd_get"] == "0" {
		t.Errorf("stats: curr_items %s cmd_get %s", st["curr_items"], st["cmd_get"])
	}
}

// TestShutdownWithIdleClients stops the store with TCP clients connected,
// one idle and one halfway through a request line: Serve must return at
// once, as Ctrl-C on `lab serve` relies on to detach XDP and exit.
func TestShutdownWithIdleClients(t *testing.T) {
	_, s, addr, stop := serveLoopback(t, Config{})
	for _, greet := range []string{"", "get half"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(greet)); err != nil {
			t.Fatal(err)
		}
	}
	// Both connections are being served before the stop.
	for s.conns() < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
		t.Logf("stopped in %s with 2 clients connected", time.Since(start).Round(time.Microsecond))
	case <-time.After(time.Second):
		t.Fatal("Serve did not return within a second of its context ending, with 2 idle TCP clients connected")
	}
}

// TestFlushAllDelay holds flush_all's argument to memcached's rule: up to
// 30 days it is a delay, past that a Unix time (one already past flushes
// now), and the pending flush dies with the store.
func TestFlushAllDelay(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		arg  int32
		want time.Duration
	}{
		{0, 0}, {-1, 0}, {5, 5 * time.Second}, {relTimeMax, time.Duration(relTimeMax) * time.Second},
		{relTimeMax + 1, 0}, {1_000_000_000, 0}, {1_800_000_007, 7 * time.Second},
	} {
		if got := flushDelay(c.arg, now); got != c.want {
			t.Errorf("flush_all %d at %d: delay %s, want %s", c.arg, now.Unix(), got, c.want)
		}
	}

	_, s, addr, stop := serveLoopback(t, Config{})
	c, err := memcache.DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	do(t, c, "set k 0 0 1\r\nv\r\n")
	// An absolute time in the past (2001) flushes at once.
	if got := do(t, c, "flush_all 1000000000\r\n"); got != "OK\r\n" {
		t.Fatalf("flush_all: %q", got)
	}
	if got := do(t, c, "get k\r\n"); got != "END\r\n" {
		t.Errorf("after flush_all with a past Unix time: %q, want the item gone", got)
	}
	// A delayed flush is pending, replaced by the next flush_all, and
	// stopped with the store.
	do(t, c, "set k 0 0 1\r\nv\r\n")
	do(t, c, fmt.Sprintf("flush_all %d\r\n", time.Now().Unix()+3600))
	if got := do(t, c, "get k\r\n"); got != "VALUE k 0 1\r\nv\r\nEND\r\n" {
		t.Errorf("flush_all an hour ahead flushed now: %q", got)
	}
	s.mu.Lock()
	pending := s.flushAt
	s.mu.Unlock()
	if pending == nil {
		t.Fatal("no flush pending after flush_all an hour ahead")
	}
	do(t, c, "flush_all 0\r\n")
	if pending.Stop() {
		t.Error("flush_all 0 left the earlier delayed flush pending (memcached keeps one flush time)")
	}
	do(t, c, "flush_all 3600\r\n")
	s.mu.Lock()
	pending = s.flushAt
	s.mu.Unlock()
	c.Close()
	stop()
	if pending.Stop() {
		t.Error("the delayed flush outlived the store")
	}
}
