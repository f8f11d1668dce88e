package kv

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/xdplab/xdplab/lab/internal/testutils"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/verifier"
)

// growKey is the key of TestVethValueRoom's GETs: 16 bytes, as a typical
// key.
const growKey = "grow-value-key16"

// growTries is how many GETs of a value must all be answered in XDP for it
// to count as served there: a veth gives one frame in a few (a page_pool
// page's last fragment) more tailroom than the rest, so one GET proves
// nothing about the next.
const growTries = 5

// growth is how many bytes the GET reply for a value of n bytes outgrows
// its request (the UDP payloads, frame header aside).
func growth(n int) int {
	return len(fmt.Sprintf("VALUE %s 0 %d\r\n", growKey, n)) + n + len("\r\nEND\r\n") - len("get "+growKey+"\r\n")
}

// TestVethValueRoom measures, on a veth pair, how far the kernel lets an
// XDP reply grow (netlab's room probe, on the very GET request the store
// then gets) and the largest value the store answers in XDP (counted by its
// xdp_tx, never the slow path's replies), over IPv4 and IPv6, and records
// both for the matrix report. It holds the store to the room the probe
// found: a value whose reply fits the head room and the tail room
// together, as every frame had them, is answered in XDP; every reply, from XDP or the slow path, is
// byte-exact and the same as the slow path's over TCP.
func TestVethValueRoom(t *testing.T) {
	topo := netlab.ForTest(t, netlab.PairSpec(netlab.Options{PeerXDP: true}))
	client, kvh := topo.Host("client"), topo.Host("kv")
	get := append(frameHdr(1, 0, 1, 0), "get "+growKey+"\r\n"...)
	type room struct{ lo, hi netlab.Room }
	rooms := map[bool]room{}
	p, err := netlab.ProbeRoom(kvh, kvh.Dev(), labPort, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		send, done, err := netlab.SendUDP(client, netip.MustParseAddrPort(hostAddr(kvh, v6)), get)
		if err != nil {
			t.Fatal(err)
		}
		var r room
		for i := 0; i < 16; i++ {
			m, err := p.Measure(send)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				r = room{m, m}
			}
			r.lo.Head, r.lo.Tail = min(r.lo.Head, m.Head), min(r.lo.Tail, m.Tail)
			r.hi.Head, r.hi.Tail = max(r.hi.Head, m.Head), max(r.hi.Tail, m.Tail)
		}
		done()
		rooms[v6] = r
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	l := startStore(t, kvh, Config{})
	l.client = client
	tcp := l.dial(t, "tcp", l.storeAddr(false))
	var found []verifier.Limit
	for _, v6 := range []bool{false, true} {
		family := map[bool]string{false: "IPv4", true: "IPv6"}[v6]
		r := rooms[v6]
		udp := l.dial(t, "udp", l.storeAddr(v6))
		// xdp says how many of growTries GETs of a value of n bytes XDP
		// answered; each reply must be the value, byte for byte, as the
		// slow path has it over TCP.
		memo := map[int]int{}
		xdp := func(n int) int {
			t.Helper()
			if k, ok := memo[n]; ok {
				return k
			}
			val := strings.Repeat(string(rune('a'+n%26)), n)
			want := fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", growKey, n, val)
			if got, err := doCtx(tcp, fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", growKey, n, val)); err != nil || got != "STORED\r\n" {
				t.Fatalf("set %d bytes: %q %v", n, got, err)
			}
			if got, err := doCtx(tcp, "get "+growKey+"\r\n"); err != nil || got != want {
				t.Fatalf("%s: get of %d bytes over TCP: %.60q %v", family, n, got, err)
			}
			served := 0
			for i := 0; i < growTries; i++ {
				tx, pass := l.stat(t, "xdp_tx"), l.stat(t, "xdp_pass")
				got, err := doCtx(udp, "get "+growKey+"\r\n")
				if err != nil || got != want {
					t.Fatalf("%s: get of %d bytes: %.60q %v, want %.60q", family, n, got, err, want)
				}
				dtx, dpass := l.stat(t, "xdp_tx")-tx, l.stat(t, "xdp_pass")-pass
				switch {
				case dtx == 1 && dpass == 0:
					served++
				case dtx == 0 && dpass == 1:
				default:
					t.Fatalf("%s: get of %d bytes: xdp_tx +%d, xdp_pass +%d", family, n, dtx, dpass)
				}
			}
			memo[n] = served
			return served
		}
		// The largest value always answered in XDP, by bisection over
		// 0..the in-kernel limit (a reply's growth rises with its value).
		maxVal := int(l.o.cfg.MaxValue)
		best := maxVal
		if xdp(maxVal) < growTries {
			best = sort.Search(maxVal+1, func(n int) bool { return xdp(n) < growTries }) - 1
		}
		// What the store must answer in XDP: a value whose reply fits the
		// room every frame had, at both ends.
		must := -1
		for n := 0; n <= maxVal && growth(n) <= r.lo.Head+r.lo.Tail; n++ {
			must = n
		}
		t.Logf("%s: GET %d bytes, room head %d..%d tail %d..%d; largest value always answered in XDP %d bytes (reply grows %d); must be at least %d (grows %d)",
			family, len(get), r.lo.Head, r.hi.Head, r.lo.Tail, r.hi.Tail, best, growth(max(best, 0)), must, growth(max(must, 0)))
		if best < maxVal {
			t.Logf("%s: %d bytes: %d of %d GETs answered in XDP", family, best+1, xdp(best+1), growTries)
		}
		if best < must {
			t.Errorf("%s: the largest value answered in XDP is %d bytes, but every frame had room for %d", family, best, must)
		}
		// The in-kernel limit's GETs, answered where they fit, byte-exact
		// either way (xdp checks the bytes). No count is asserted: the
		// frame that is its page_pool page's last has the page's
		// remainder too, which depends on the frames before it.
		if best < maxVal {
			// The largest value a frame with the most room seen fits.
			n := best
			for n < maxVal && growth(n+1) <= r.hi.Head+r.hi.Tail {
				n++
			}
			for _, n := range []int{n, maxVal} {
				t.Logf("%s: %d bytes (reply grows %d): %d of %d GETs answered in XDP", family, n, growth(n), xdp(n), growTries)
			}
		}
		found = append(found, verifier.Limit{
			Name: "largest value answered in XDP, GET " + family, Value: int64(best), Unit: "bytes",
			Note: fmt.Sprintf("its reply grows %d bytes; room head %d, tail %d (up to %d)", growth(max(best, 0)), r.lo.Head, r.lo.Tail, r.hi.Tail),
		})
	}
	testutils.RecordRoom(t, "kv", found)
}
