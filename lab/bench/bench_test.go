package bench

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
)

// startMemcached runs memcached with UDP on a free-looking loopback port.
func startMemcached(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("memcached not installed: run make deps")
	}
	for try := 0; ; try++ {
		port := strconv.Itoa(20000 + rand.IntN(30000))
		args := []string{"-l", "127.0.0.1", "-p", port, "-U", port, "-t", "2", "-m", "64"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "root")
		}
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		addr := net.JoinHostPort("127.0.0.1", port)
		if waitTCP(addr, done) {
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			return addr
		}
		cmd.Process.Kill()
		<-done
		if try == 5 {
			t.Fatal("memcached did not start")
		}
	}
}

// waitTCP waits until addr accepts, or the process exits (port taken).
func waitTCP(addr string, exited chan struct{}) bool {
	for range 200 {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func TestRunAgainstMemcached(t *testing.T) {
	addr := startMemcached(t)
	ctx := t.Context()
	for _, w := range []Workload{
		{GetRatio: 1, Keys: 500, KeySize: 16, ValueSize: 100, InFlight: 16, Sockets: 2, Preload: true},
		{GetRatio: 0.5, Keys: 500, KeySize: 32, ValueSize: 10, InFlight: 4, Sockets: 1, Preload: true, KeyPrefix: "mix:"},
		{GetRatio: 1, Keys: 100, KeySize: 16, ValueSize: 100, MultiGet: 10, InFlight: 8, Sockets: 1, Preload: true, KeyPrefix: "mg:"},
		// Values beyond one reply datagram: memcached splits the reply.
		{GetRatio: 1, Keys: 50, KeySize: 16, ValueSize: 1300, MultiGet: 3, InFlight: 4, Sockets: 1, Preload: true, KeyPrefix: "big:"},
		{GetRatio: 0, Keys: 100, KeySize: 8, ValueSize: 1, InFlight: 8, Sockets: 1, KeyPrefix: "s:"},
	} {
		// A generous timeout: a loaded machine must not turn a slow reply
		// into a lost one, which the test counts as a failure.
		w.Duration, w.Warmup, w.Timeout = 300*time.Millisecond, 50*time.Millisecond, 2*time.Second
		for _, tgt := range []Target{
			{Network: "udp", Client: ClientPinned}, {Network: "udp", Client: ClientNetpoll}, {Network: "tcp"},
		} {
			tgt.Name, tgt.Addr = "memcached", addr
			t.Run(tgt.Network+"/"+tgt.client()+"/"+w.String(), func(t *testing.T) {
				testRunAgainst(t, tgt, w)
			})
		}
	}
	// The keys the loader stored are the ones the workload reads.
	c, err := memcache.DialUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	items, err := c.Get(cctx, "b:00000000000499")
	if err != nil || len(items) != 1 || len(items[0].Value) != 100 {
		t.Errorf("get b:00000000000499: %v %v", items, err)
	}
}

func testRunAgainst(t *testing.T, tgt Target, w Workload) {
	r, err := Run(t.Context(), tgt, w)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", MarkdownTable(r))
	if r.Requests == 0 || r.Requests != r.Gets+r.Sets || r.Errors != 0 || r.Lost != 0 || r.Late != 0 || r.Client != tgt.client() {
		t.Errorf("requests %d (gets %d sets %d) errors %d lost %d late %d client %q", r.Requests, r.Gets, r.Sets, r.Errors, r.Lost, r.Late, r.Client)
	}
	if r.Histogram().Count() != r.Requests || r.Latency.P50Us <= 0 || r.Latency.P99Us < r.Latency.P50Us {
		t.Errorf("latency: %+v over %d records", r.Latency, r.Histogram().Count())
	}
	if w.GetRatio > 0 && (r.Misses != 0 || r.Hits != r.Gets*uint64(max(1, w.MultiGet))) {
		t.Errorf("preloaded, yet hits %d misses %d for %d gets", r.Hits, r.Misses, r.Gets)
	}
	if w.GetRatio == 0 && r.Gets != 0 {
		t.Errorf("gets %d in a SET-only run", r.Gets)
	}
	if w.GetRatio == 0.5 && (r.Gets < r.Requests/4 || r.Sets < r.Requests/4) {
		t.Errorf("mix: %d gets, %d sets", r.Gets, r.Sets)
	}
	if r.PreloadFailed != 0 {
		t.Errorf("preload failed for %d keys", r.PreloadFailed)
	}
	// The client alone keeps a CPU partly busy; no more CPUs than exist.
	if ct, ok := readCPU(); ok && (r.CPUBusy <= 0 || r.CPUBusy > float64(ct.cpus)+0.01 || r.CPUUsPerReq <= 0) {
		t.Errorf("CPU: %.2f of %d CPUs busy, %.2f µs per request", r.CPUBusy, ct.cpus, r.CPUUsPerReq)
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil || back["ops_per_sec"] == nil || back["latency"] == nil || back["network"] != tgt.Network {
		t.Errorf("json: %s (%v)", js, err)
	}
}

func TestRunNobodyListening(t *testing.T) {
	// Find a UDP port nobody uses: bind one and close it.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	w := Workload{GetRatio: 1, Keys: 10, Duration: 100 * time.Millisecond, Timeout: 20 * time.Millisecond, Sockets: 1}
	_, err = Run(t.Context(), Target{Addr: addr}, w)
	if err == nil || !strings.Contains(err.Error(), "no replies") {
		t.Fatalf("err %v, want no replies", err)
	}
	w.Preload = true
	if _, err := Run(t.Context(), Target{Addr: addr}, w); err == nil || !strings.Contains(err.Error(), "preload stored none") {
		t.Fatalf("preload: err %v", err)
	}
}

// TestRunTCPBadServers: a TCP server that never answers costs lost
// requests and reconnects, one that hangs up costs errors; neither hangs
// the client or passes for a server.
func TestRunTCPBadServers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
		count func(*Result) uint64
	}{
		{"silent", func(c net.Conn) { io.Copy(io.Discard, c) }, func(r *Result) uint64 { return r.Lost }},
		{"hangs-up", func(c net.Conn) { c.Close() }, func(r *Result) uint64 { return r.Errors }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var accepted atomic.Int64
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					go func() { defer c.Close(); tc.serve(c) }()
				}
			}()
			defer ln.Close()
			w := Workload{GetRatio: 1, Keys: 10, Duration: 300 * time.Millisecond, Timeout: 50 * time.Millisecond, Sockets: 1, InFlight: 4}
			start := time.Now()
			r, err := Run(t.Context(), Target{Addr: ln.Addr().String(), Network: "tcp"}, w)
			if err == nil || !strings.Contains(err.Error(), "no replies") || !strings.Contains(err.Error(), "TCP") {
				t.Fatalf("err %v, want no replies from a TCP server", err)
			}
			if r == nil || tc.count(r) == 0 || accepted.Load() < 2 {
				t.Errorf("result %+v after %d connections: want the failures counted and reconnects", r, accepted.Load())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestWorkloadValidate(t *testing.T) {
	for _, w := range []Workload{
		{GetRatio: 2},
		{KeySize: 251},
		{Keys: 100000, KeySize: 4},
		{ValueSize: 2000, GetRatio: 0.5},
		{MultiGet: 100, KeySize: 100},
		{InFlight: -1},
	} {
		if err := w.normalize(); err == nil {
			t.Errorf("%+v: accepted", w)
		}
	}
	w := Workload{GetRatio: 1}
	if err := w.normalize(); err != nil || w.KeySize != 16 || w.Sockets != 2 || w.MultiGet != 1 {
		t.Errorf("defaults: %+v %v", w, err)
	}
	ks := newKeySet(Workload{Keys: 12, KeySize: 8, KeyPrefix: "k:"})
	if got := string(ks.key(11)); got != "k:000011" {
		t.Errorf("key 11: %q", got)
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := time.Duration(q*10000) * time.Microsecond
		got := h.Quantile(q)
		if got < want || float64(got) > float64(want)*(1+1.0/histSub) {
			t.Errorf("q%v: %v, want %v within 1/%d", q, got, want, histSub)
		}
	}
	if h.Max() != 10*time.Millisecond || h.Min() != time.Microsecond || h.Count() != 10000 {
		t.Errorf("max %v min %v count %d", h.Max(), h.Min(), h.Count())
	}
	if m := h.Mean(); m < 5000*time.Microsecond || m > 5001*time.Microsecond {
		t.Errorf("mean %v", m)
	}
	var g Histogram
	g.Record(3)
	g.Merge(&h)
	if g.Count() != 10001 || g.Min() != 3 || g.Quantile(0) != 3 {
		t.Errorf("merge: count %d min %v q0 %v", g.Count(), g.Min(), g.Quantile(0))
	}
	// Every bucket's bounds invert histIndex.
	for i := range histBuckets - 1 {
		lo, hi := histBounds(i)
		if histIndex(lo) != i || histIndex(hi) != i || histIndex(hi+1) != i+1 {
			t.Fatalf("bucket %d: [%d,%d] maps to %d,%d", i, lo, hi, histIndex(lo), histIndex(hi))
		}
	}
}
