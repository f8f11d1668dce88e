package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/memcache"
)

// fakeBackend answers gets on loopback the way answer says: a stand-in
// for a backend that misbehaves in ways a real memcached does not.
type fakeBackend struct {
	conn *net.UDPConn
	ap   netip.AddrPort
}

func startFake(t *testing.T, answer func(payload []byte) []byte, delay time.Duration) *fakeBackend {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBackend{conn: c, ap: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	var wg sync.WaitGroup
	t.Cleanup(func() { c.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < memcache.HeaderLen {
				continue
			}
			r := answer(bytes.Clone(buf[memcache.HeaderLen:n]))
			if r == nil {
				continue
			}
			id := memcache.Header{RequestID: uint16(buf[0])<<8 | uint16(buf[1]), Total: 1}
			msg := append(memcache.AppendHeader(nil, id), r...)
			wg.Go(func() {
				time.Sleep(delay)
				c.WriteToUDPAddrPort(msg, from)
			})
		}
	})
	return f
}

// goodGet answers "get k..." with each key's value being the key upper-cased.
func goodGet(payload []byte) []byte {
	var out []byte
	for _, k := range strings.Fields(strings.TrimSpace(string(payload)))[1:] {
		v := strings.ToUpper(k)
		out = fmt.Appendf(out, "VALUE %s 0 %d\r\n%s\r\n", k, len(v), v)
	}
	return append(out, "END\r\n"...)
}

// TestSlowPathBackendFaults: a backend whose reply cannot be framed, one
// that never answers, and datagrams from strangers under the ids of
// pending requests: each client gets an error or its own data, never
// another key's, and the good backends' answers are unaffected.
func TestSlowPathBackendFaults(t *testing.T) {
	good1 := startFake(t, goodGet, 20*time.Millisecond)
	good2 := startFake(t, goodGet, 0)
	garbage := startFake(t, func([]byte) []byte { return []byte("VALUE x 0 5 1 junk\r\nshort\r\nEND\r\n") }, 0)
	silent := startFake(t, func([]byte) []byte { return nil }, 0)
	erring := startFake(t, func([]byte) []byte { return []byte("SERVER_ERROR out of memory storing object\r\n") }, 0)
	fakes := []*fakeBackend{good1, good2, garbage, silent, erring}
	var backends []Backend
	for _, f := range fakes {
		backends = append(backends, Backend{Server: Server{Host: "127.0.0.1", Port: f.ap.Port(), Weight: 1}, IPv4: f.ap.Addr()})
	}
	servers := make([]Server, len(backends))
	for i, b := range backends {
		servers[i] = b.Server
	}
	ring, err := NewRing(servers, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSlowPath([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, backends, ring, SlowConfig{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	background.Serve(t, s.Serve)

	// Keys owned by each backend.
	owned := make([][]string, len(fakes))
	for i := 0; len(owned[0]) < 3 || len(owned[1]) < 3 || len(owned[2]) < 1 || len(owned[3]) < 1 || len(owned[4]) < 1; i++ {
		k := fmt.Sprintf("key%d", i)
		b := ring.Lookup([]byte(k))
		owned[b] = append(owned[b], k)
	}

	// A stranger answers every id the upstream socket is likely to use,
	// with another key's value, while good1's reply is on its way.
	stranger, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	up := s.up.LocalAddr().(*net.UDPAddr).AddrPort()
	spoof := func() {
		for id := range 64 {
			msg := memcache.AppendHeader(nil, memcache.Header{RequestID: uint16(id), Total: 1})
			stranger.WriteToUDPAddrPort(fmt.Appendf(msg, "VALUE %s 0 6\r\nSTOLEN\r\nEND\r\n", owned[0][0]), up)
		}
	}

	client, err := memcache.DialUDP(s.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	get := func(keys ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		call, err := client.Send([]byte("get " + strings.Join(keys, " ") + "\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		spoof()
		r, err := call.Wait(ctx)
		if err != nil {
			t.Fatalf("get %v: %v", keys, err)
		}
		return string(r)
	}
	want := func(keys ...string) string {
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "VALUE %s 0 %d\r\n%s\r\n", k, len(k), strings.ToUpper(k))
		}
		return b.String() + "END\r\n"
	}

	// Split over the good backends, merged in the order asked.
	keys := []string{owned[1][0], owned[0][0], owned[1][1], owned[0][1], owned[0][0]}
	if r := get(keys...); r != want(keys...) {
		t.Errorf("split get: %q\nwant %q", r, want(keys...))
	}
	if r := get(owned[0][2]); r != want(owned[0][2]) {
		t.Errorf("get from good1 with a stranger answering: %q", r)
	}
	// Any part from the garbage backend makes the whole get an error.
	if r := get(owned[0][0], owned[2][0]); r != "SERVER_ERROR bad reply from backend\r\n" {
		t.Errorf("get touching the garbage backend: %q", r)
	}
	// The silent one times out as nutcracker reports it.
	if r := get(owned[1][0], owned[3][0]); r != string(replyTimeout) {
		t.Errorf("get touching the silent backend: %q", r)
	}
	// And the good ones still answer.
	if r := get(owned[1][2], owned[0][1]); r != want(owned[1][2], owned[0][1]) {
		t.Errorf("after the faults: %q", r)
	}
	// A backend's own error reply reaches the client as it is, and counts
	// against that backend.
	if r := get(owned[4][0]); r != "SERVER_ERROR out of memory storing object\r\n" {
		t.Errorf("get from the erring backend: %q", r)
	}
	st := s.Stats()
	if st.Splits < 4 || st.Backends[3].Timeouts == 0 || st.Errors < 2 {
		t.Errorf("stats %+v", st)
	}
	if b := st.Backends[4]; b.Errors != 1 || b.Replies != 1 || st.Backends[0].Errors != 0 {
		t.Errorf("error replies counted: erring backend %+v, good1 %+v", b, st.Backends[0])
	}
}

// TestSlowPathLocal: what the slow path answers itself.
func TestSlowPathLocal(t *testing.T) {
	ring, err := NewRing([]Server{{Host: "127.0.0.1", Port: 1, Weight: 1}}, []bool{false})
	if err != nil {
		t.Fatal(err)
	}
	s := &SlowPath{pending: map[uint16]*upCall{}}
	s.st.backends = make([]backendCounters, 1)
	s.ring.Store(ring)
	for _, c := range []struct{ req, reply string }{
		{"version\r\n", string(VersionReply)},
		{"get a\r\n", string(replyNoBackend)},
		{"set a 0 0 1 noreply\r\nx\r\n", ""},
		{"set a 0 0 x\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"flush_all\r\n", "ERROR\r\n"},
		{"stats\r\nversion\r\n", "ERROR\r\n" + string(VersionReply)},
		{"bogus\r\nquit\r\nversion\r\n", "ERROR\r\n"},
		{"get " + strings.Repeat("k", 251) + "\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"set a 0 0 5\r\nab", ""}, // incomplete: nothing to forward
	} {
		if r := string(s.serve([]byte(c.req))); r != c.reply {
			t.Errorf("%.40q: %q, want %q", c.req, r, c.reply)
		}
	}
}
