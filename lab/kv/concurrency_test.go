package kv

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/memcache"
)

// xdpDo runs one request through the XDP program (BPF_PROG_TEST_RUN runs
// it on the calling thread's CPU) and returns the reply, or nil if XDP did
// not answer.
func xdpDo(o *Objects, id uint16, req string) ([]byte, uint32, error) {
	in := Datagram{Src: testClient, Dst: testServerPort(o), ID: id, Payload: []byte(req)}.Frame()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+2048)}
	act, err := o.objs.KvXdp.Run(&opts)
	if err != nil || act != 3 {
		return nil, act, err
	}
	d, err := ParseFrame(opts.DataOut)
	return d.Payload, act, err
}

// TestConcurrentIncrAndNoTear hammers one counter and one value from XDP on
// every CPU and from the slow path at once: no incr may be lost and no
// reader may see a value mixing two writes.
func TestConcurrentIncrAndNoTear(t *testing.T) {
	o := loadForTest(t, Config{})
	g := newEngine(o)
	if r, _, err := xdpDo(o, 0, "set ctr 0 0 1\r\n0\r\n"); err != nil || string(r) != "STORED\r\n" {
		t.Fatalf("set ctr: %q %v", r, err)
	}
	workers := 2 * runtime.NumCPU()
	const perWorker = 1500
	const slowIncrs = 300
	var wg sync.WaitGroup
	errs := make(chan error, workers+2)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // spread the runs over CPUs
			defer runtime.UnlockOSThread()
			fill := byte('a' + w%26)
			for i := range perWorker {
				r, act, err := xdpDo(o, uint16(i), "incr ctr 1\r\n")
				if err != nil || act != 3 {
					errs <- fmt.Errorf("incr: action %d %v", act, err)
					return
				}
				if _, err := strconv.ParseUint(string(bytes.TrimSpace(r)), 10, 64); err != nil {
					errs <- fmt.Errorf("incr reply %q", r)
					return
				}
				val := bytes.Repeat([]byte{fill}, 200)
				if w%2 == 0 {
					xdpDo(o, uint16(i), fmt.Sprintf("set v 0 0 %d\r\n%s\r\n", len(val), val))
					continue
				}
				r, _, _ = xdpDo(o, uint16(i), "get v\r\n")
				if len(r) > 0 && string(r) != "END\r\n" {
					items, err := memcache.ParseItems(r)
					if err != nil || len(items) != 1 {
						errs <- fmt.Errorf("get v: %q %v", r, err)
						return
					}
					d := items[0].Value
					if len(d) != 200 || bytes.Count(d, d[:1]) != 200 {
						errs <- fmt.Errorf("torn value: %q", d)
						return
					}
				}
			}
		}()
	}
	// The slow path increments the same counter through the control program.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range slowIncrs {
			req := memcache.Request{Command: memcache.CmdIncr, Key: []byte("ctr"), Delta: 1}
			if r := g.exec(&req); !bytes.HasSuffix(r, []byte("\r\n")) || r[0] < '0' || r[0] > '9' {
				errs <- fmt.Errorf("slow incr: %q", r)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r, _, err := xdpDo(o, 0, "get ctr\r\n")
	if err != nil {
		t.Fatal(err)
	}
	want := workers*perWorker + slowIncrs
	items, err := memcache.ParseItems(r)
	if err != nil || len(items) != 1 || string(bytes.TrimSpace(items[0].Value)) != strconv.Itoa(want) {
		t.Fatalf("counter after %d increments: %q (%v)", want, r, err)
	}
}

// TestLRUEviction fills a map far past its size: the most recent keys
// survive, old ones are evicted, and stats count the evictions. The kernel's
// LRU is approximate: each CPU keeps up to 128 free entries of its own, so
// the map must be well above 128 x CPUs for recency to hold (at 256 entries
// and 2 CPUs, 5.10 kept only 32 of the 50 newest keys).
func TestLRUEviction(t *testing.T) {
	const entries = 2048
	o := loadForTest(t, Config{Entries: entries})
	s := NewServer(o)
	const n = 8 * entries
	for i := range n {
		req := fmt.Sprintf("set key%d 0 0 5\r\nv%04d\r\n", i, i%10000)
		if r, act, err := xdpDo(o, uint16(i), req); err != nil || string(r) != "STORED\r\n" {
			t.Fatalf("%q: %q action %d %v", req, r, act, err)
		}
	}
	hits := 0
	for i := n - 50; i < n; i++ {
		r, _, _ := xdpDo(o, 0, fmt.Sprintf("get key%d\r\n", i))
		if bytes.HasPrefix(r, []byte("VALUE ")) {
			hits++
		}
	}
	if hits < 45 {
		t.Errorf("only %d of the 50 newest keys survived", hits)
	}
	if r, _, _ := xdpDo(o, 0, "get key0\r\n"); string(r) != "END\r\n" {
		t.Errorf("oldest key still served: %q", r)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range st {
		m[kv[0]] = kv[1]
	}
	ev, _ := strconv.Atoi(m["evictions"])
	items, _ := strconv.Atoi(m["curr_items"])
	if ev < n-entries-100 || items > entries || m["total_items"] != strconv.Itoa(n) {
		t.Errorf("stats after %d sets into 2048 entries: evictions %s curr_items %s total_items %s", n, m["evictions"], m["curr_items"], m["total_items"])
	}
}

// TestExpiryRules checks memcached's exptime forms in XDP: negative is
// already expired, up to 30 days is relative, beyond is an absolute time.
func TestExpiryRules(t *testing.T) {
	o := loadForTest(t, Config{})
	for _, c := range []struct {
		exp  string
		live bool
	}{
		{"0", true}, {"-1", false}, {"100", true}, {"2592000", true},
		{"2592001", false},   // absolute: 1970, long past
		{"2000000000", true}, // absolute: 2033
		{"1000000000", false},
	} {
		key := "e" + c.exp
		if r, _, _ := xdpDo(o, 0, fmt.Sprintf("set %s 0 %s 1\r\nx\r\n", key, c.exp)); string(r) != "STORED\r\n" {
			t.Fatalf("set exptime %s: %q", c.exp, r)
		}
		r, _, _ := xdpDo(o, 0, "get "+key+"\r\n")
		if got := bytes.HasPrefix(r, []byte("VALUE")); got != c.live {
			t.Errorf("exptime %s: live=%v, want %v (%q)", c.exp, got, c.live, r)
		}
	}
	// touch with a negative time expires an item.
	xdpDo(o, 0, "set tk 0 0 1\r\nx\r\n")
	if r, _, _ := xdpDo(o, 0, "touch tk -1\r\n"); string(r) != "TOUCHED\r\n" {
		t.Fatalf("touch: %q", r)
	}
	if r, _, _ := xdpDo(o, 0, "get tk\r\n"); string(r) != "END\r\n" {
		t.Errorf("touched to -1 but still served: %q", r)
	}
}
