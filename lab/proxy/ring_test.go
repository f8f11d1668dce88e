package proxy

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// The vectors below were computed with a separate Python model of
// nutcracker's nc_fnv.c and nc_ketama.c (float32 steps via struct
// round-trips); TestRingMatchesNutcracker checks the same code against
// nutcracker itself.

func TestHash(t *testing.T) {
	for _, c := range []struct {
		key  string
		want uint32
	}{
		{"", 0x811c9dc5}, // FNV-1a offset basis
		{"a", 0xe40c292c},
		{"foobar", 0xbf9cf968},
		// Bytes from 0x80 are sign-extended, as nutcracker's char is;
		// textbook FNV-1a would give 0x850b939f, 0xa82b5049, 0xa2148427.
		{"\x80", 0x04f3b29f},
		{"caf\xc3\xa9", 0x7572c049},
		{"key:\xff", 0x97ebd727},
	} {
		if got := Hash([]byte(c.key)); got != c.want {
			t.Errorf("Hash(%q) = %#x, want %#x", c.key, got, c.want)
		}
	}
}

func TestServerPoints(t *testing.T) {
	for _, c := range []struct{ w, total, n, want uint32 }{
		{1, 1, 1, 160},
		{1, 3, 3, 160},
		{1, 6, 3, 80}, {2, 6, 3, 160}, {3, 6, 3, 240},
		{1, 7, 3, 68}, {4, 7, 3, 272}, // floor(17.14)*4, floor(68.57)*4
		// float32 rounding: exact arithmetic gives 32, 64, 128, 256; nutcracker 28, 60, 124, 252.
		{1, 25, 5, 28}, {2, 25, 5, 60}, {4, 25, 5, 124}, {8, 25, 5, 252}, {10, 25, 5, 320},
		{1, 17, 4, 36}, {10, 17, 4, 376},
	} {
		if got := serverPoints(c.w, c.total, c.n); got != c.want {
			t.Errorf("serverPoints(%d, %d, %d) = %d, want %d", c.w, c.total, c.n, got, c.want)
		}
	}
}

func TestParseServer(t *testing.T) {
	for _, c := range []struct {
		in       string
		want     Server
		identity string
	}{
		{"198.18.2.2:11211:1", Server{Host: "198.18.2.2", Port: 11211, Weight: 1}, "198.18.2.2"},
		{"198.18.2.2:11311:3", Server{Host: "198.18.2.2", Port: 11311, Weight: 3}, "198.18.2.2:11311"},
		{"fd00:0:0:2::2:11211:2", Server{Host: "fd00:0:0:2::2", Port: 11211, Weight: 2}, "fd00:0:0:2::2"},
		{"fd00:0:0:2::2:1:1", Server{Host: "fd00:0:0:2::2", Port: 1, Weight: 1}, "fd00:0:0:2::2:1"},
		{"cache-1.example:11211:1 server1", Server{Host: "cache-1.example", Port: 11211, Weight: 1, Name: "server1"}, "server1"},
	} {
		got, err := ParseServer(c.in)
		if err != nil {
			t.Errorf("ParseServer(%q): %v", c.in, err)
			continue
		}
		if got != c.want || got.Identity() != c.identity || got.String() != c.in {
			t.Errorf("ParseServer(%q) = %+v identity %q string %q; want %+v identity %q", c.in, got, got.Identity(), got.String(), c.want, c.identity)
		}
	}
	for _, in := range []string{
		"", "10.0.0.1", "10.0.0.1:11211", "10.0.0.1:11211:0", "10.0.0.1:0:1", "10.0.0.1:65536:1",
		":11211:1", "10.0.0.1:11211:x", "10.0.0.1:11211:-1", "10.0.0.1:11211:1 ", "/tmp/mc.sock:1",
		"10.0.0.1:11211:1 a b", // the name ends at the last space, leaving "1 a" as the weight
		"[fd00::1]:11211:1",
		"10.0.0.1:11211:1 " + strings.Repeat("n", maxIdentity+1),
	} {
		if s, err := ParseServer(in); err == nil {
			t.Errorf("ParseServer(%q) = %+v, want an error", in, s)
		}
	}
}

func mustRing(t *testing.T, servers []Server, live []bool) *Ring {
	t.Helper()
	r, err := NewRing(servers, live)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func countPoints(r *Ring) []int {
	n := make([]int, len(r.servers))
	for _, p := range r.points {
		n[p.Server]++
	}
	return n
}

var vectorKeys = []string{"foo", "bar", "user:1000", "session:\xe2\x9c\x93", strings.Repeat("x", 250), "a"}

func TestRingVectors(t *testing.T) {
	three := []Server{
		{Host: "198.18.2.2", Port: 11211, Weight: 1},
		{Host: "198.18.3.2", Port: 11211, Weight: 1},
		{Host: "198.18.4.2", Port: 11211, Weight: 1},
	}
	named := []Server{
		{Host: "h", Port: 1, Weight: 1, Name: "a"}, {Host: "h", Port: 2, Weight: 2, Name: "b"},
		{Host: "h", Port: 3, Weight: 4, Name: "c"}, {Host: "h", Port: 4, Weight: 8, Name: "d"},
		{Host: "h", Port: 5, Weight: 10, Name: "e"},
	}
	for _, c := range []struct {
		name    string
		servers []Server
		live    []bool
		counts  []int
		lookups []int // for vectorKeys
	}{
		{"three", three, nil, []int{160, 160, 160}, []int{2, 2, 1, 2, 1, 0}},
		{"weighted", named, nil, []int{28, 60, 124, 252, 320}, []int{4, 3, 2, 4, 2, 2}},
		{"ejected", named, []bool{true, true, true, false, true}, []int{36, 72, 148, 0, 376}, []int{4, 4, 2, 4, 2, 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := mustRing(t, c.servers, c.live)
			if got := countPoints(r); fmt.Sprint(got) != fmt.Sprint(c.counts) {
				t.Errorf("points per server %v, want %v", got, c.counts)
			}
			for i, k := range vectorKeys {
				if got := r.Lookup([]byte(k)); got != c.lookups[i] {
					t.Errorf("Lookup(%.20q) = %d, want %d", k, got, c.lookups[i])
				}
			}
			for i := 1; i < len(r.points); i++ {
				if r.points[i-1].Hash > r.points[i].Hash {
					t.Fatalf("points not sorted at %d", i)
				}
			}
		})
	}
	// The first server's first md5 digest, "198.18.2.2-0", is four points.
	r := mustRing(t, three, nil)
	d := md5.Sum([]byte("198.18.2.2-0"))
	want := map[uint32]bool{0x0778b891: true, 0x712420cc: true, 0x09882f50: true, 0x62eab7b6: true}
	for x := 0; x < 4; x++ {
		if h := binary.LittleEndian.Uint32(d[4*x:]); !want[h] {
			t.Fatalf("md5 point %d = %#x, not among %v", x, h, want)
		}
	}
	found := 0
	for _, p := range r.points {
		if want[p.Hash] && p.Server == 0 {
			found++
		}
	}
	if found != 4 {
		t.Errorf("%d of the 4 points of \"198.18.2.2-0\" on the ring", found)
	}
	if first, last := r.points[0], r.points[len(r.points)-1]; first != (Point{23323193, 2}) || last != (Point{4292148744, 2}) {
		t.Errorf("ring runs from %+v to %+v, want {23323193 2} to {4292148744 2}", first, last)
	}
}

func TestLookupHashEdges(t *testing.T) {
	r := &Ring{servers: make([]Server, 3), points: []Point{{10, 2}, {20, 0}, {20, 1}, {30, 1}}}
	for _, c := range []struct {
		h    uint32
		want int
	}{
		{0, 2}, {10, 2}, {11, 0}, {20, 0}, // on a tie the first point wins
		{21, 1}, {30, 1}, {31, 2}, {^uint32(0), 2}, // past the last point: wrap
	} {
		if got := r.LookupHash(c.h); got != c.want {
			t.Errorf("LookupHash(%d) = %d, want %d", c.h, got, c.want)
		}
	}
	// An empty key hashes to 0 in nutcracker, not to the FNV basis.
	if got := r.Lookup(nil); got != 2 {
		t.Errorf("Lookup(empty) = %d, want 2 (hash 0)", got)
	}
}

func TestRingLiveSets(t *testing.T) {
	servers := []Server{{Host: "a", Port: 1, Weight: 1}, {Host: "b", Port: 1, Weight: 1}, {Host: "c", Port: 1, Weight: 1}}
	if _, err := NewRing(nil, nil); err == nil {
		t.Error("NewRing with no servers: no error")
	}
	if _, err := NewRing(servers, []bool{true}); err == nil {
		t.Error("NewRing with 1 live flag for 3 servers: no error")
	}
	none := mustRing(t, servers, []bool{false, false, false})
	if got := none.Lookup([]byte("k")); got != -1 {
		t.Errorf("Lookup with nothing live = %d, want -1", got)
	}
	one := mustRing(t, servers[:1], nil)
	if got := one.Lookup([]byte("k")); got != 0 {
		t.Errorf("one-server Lookup = %d, want 0", got)
	}
	// With equal weights every live server keeps 160 points, so ejecting
	// one moves only its own keys, and only to live servers.
	full := mustRing(t, servers, nil)
	less := mustRing(t, servers, []bool{true, false, true})
	moved := 0
	for i := range 10000 {
		k := []byte(fmt.Sprintf("key-%d", i))
		a, b := full.Lookup(k), less.Lookup(k)
		if b == 1 {
			t.Fatalf("key %s on ejected server", k)
		}
		if a != 1 && a != b {
			t.Fatalf("key %s moved from live server %d to %d", k, a, b)
		}
		if a != b {
			moved++
		}
	}
	// About a third of the keys were on server 1.
	if moved < 2000 || moved > 4700 {
		t.Errorf("%d of 10000 keys moved, want about a third", moved)
	}
}

// TestRingBuckets: every whole bucket names the server LookupHash gives
// for each hash in it (checked at its ends and around every point inside
// it), and a bucket is mixed only when a point splits it.
func TestRingBuckets(t *testing.T) {
	var servers []Server
	for i := range 40 {
		servers = append(servers, Server{Host: fmt.Sprintf("198.18.%d.2", i), Port: 11211, Weight: uint32(1 + i%3)})
	}
	for _, tc := range []struct {
		name string
		n    int
		live []bool
	}{{"one", 1, nil}, {"three", 3, nil}, {"three-one-out", 3, []bool{true, false, true}}, {"forty-weighted", 40, nil}} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRing(t, servers[:tc.n], tc.live)
			b := r.buckets()
			mixed := 0
			for j, owner := range b {
				lo, hi := uint32(j)<<16, uint32(j)<<16|0xffff
				probes := []uint32{lo, hi}
				split := false
				for _, p := range r.points {
					if p.Hash >= lo && p.Hash <= hi {
						probes = append(probes, p.Hash, min(p.Hash+1, hi))
					}
					if p.Hash >= lo && p.Hash < hi && r.LookupHash(p.Hash) != r.LookupHash(p.Hash+1) {
						split = true
					}
				}
				if int(owner) == bucketMixed {
					mixed++
					if !split {
						t.Errorf("bucket %#x mixed, yet no point splits it", j)
					}
					continue
				}
				for _, h := range probes {
					if got := r.LookupHash(h); got != int(owner) {
						t.Fatalf("bucket %#x says server %d, LookupHash(%#x) = %d", j, owner, h, got)
					}
				}
			}
			if mixed > len(r.points) {
				t.Errorf("%d mixed buckets for %d points", mixed, len(r.points))
			}
			t.Logf("%d points, %d of 65536 buckets mixed", len(r.points), mixed)
		})
	}
}
