package kv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/memcache"
)

// startLoopback serves the slow path on 127.0.0.1 (no XDP attached), so
// every request takes the Go path on the same maps XDP uses.
func startLoopback(t *testing.T, cfg Config) (*Objects, *Server, string) {
	t.Helper()
	if cfg.Port == 0 {
		cfg.Port = uint16(20000 + rand.IntN(20000))
	}
	o := loadForTest(t, cfg)
	s := NewServer(o)
	if err := s.Listen("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	background.Serve(t, s.Serve)
	_, tcp := s.Addrs()
	return o, s, tcp.String()
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
		act, r := run(t, o, Datagram{Src: testClient, Dst: testServerPort(o), Payload: []byte(req)})
		return act, string(r)
	}
	big := strings.Repeat("b", 100)

	if got := do(t, c, "set k 1 0 3\r\nabc\r\n"); got != "STORED\r\n" {
		t.Fatalf("tcp set: %q", got)
	}
	if act, got := xdp("get k\r\n"); act != 3 || got != "VALUE k 1 3\r\nabc\r\nEND\r\n" {
		t.Fatalf("xdp get after tcp set: %d %q", act, got)
	}
	if act, got := xdp("set n 0 0 2\r\n41\r\n"); act != 3 || got != "STORED\r\n" {
		t.Fatalf("xdp set: %d %q", act, got)
	}
	if got := do(t, c, "incr n 1\r\n"); got != "42\r\n" {
		t.Fatalf("tcp incr: %q", got)
	}
	// Grow k past the slot: the slow path takes it over.
	if got := do(t, c, fmt.Sprintf("append k 0 0 %d\r\n%s\r\n", len(big), big)); got != "STORED\r\n" {
		t.Fatalf("tcp append: %q", got)
	}
	if act, _ := xdp("get k\r\n"); act != 2 {
		t.Fatalf("xdp served a slow-path key: action %d", act)
	}
	if got := do(t, c, "get k\r\n"); got != "VALUE k 1 103\r\nabc"+big+"\r\nEND\r\n" {
		t.Fatalf("tcp get big: %q", got)
	}
	// A small value takes it back into the kernel.
	if got := do(t, c, "set k 2 0 1\r\nz\r\n"); got != "STORED\r\n" {
		t.Fatalf("tcp set small: %q", got)
	}
	if act, got := xdp("gets k\r\n"); act != 3 || !strings.HasPrefix(got, "VALUE k 2 1 ") {
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
