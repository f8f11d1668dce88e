package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
	"golang.org/x/sys/unix"
)

// mbValue is a value of about a megabyte, the size memcached's default
// item limit allows, with content that shows a misplaced byte.
func mbValue(tag byte) []byte {
	v := make([]byte, 1_000_000)
	for i := range v {
		v[i] = 'a' + byte(i%23) + tag%3
	}
	return v
}

func setValue(t *testing.T, c *memcache.Client, key string, val []byte) {
	t.Helper()
	if got := do(t, c, fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(val), val)); got != "STORED\r\n" {
		t.Fatalf("set %s: %q", key, got)
	}
}

func stats(t *testing.T, c *memcache.Client) map[string]string {
	t.Helper()
	st, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// heapPeak samples the heap in use for d and returns its growth over base.
func heapPeak(base uint64, d time.Duration) uint64 {
	var peak uint64
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
	}
	return max(peak, base) - base
}

// TestTCPRepliesStreamed floods the store with gets of a 1 MB item, 200
// pipelined and 200 keys in one get, without reading a reply: the replies
// it queues must stay a few megabytes (memcached sends them from the item
// as it goes), and then all arrive intact.
func TestTCPRepliesStreamed(t *testing.T) {
	_, _, addr := startLoopback(t, Config{})
	mc, err := memcache.DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	val := mbValue(0)
	setValue(t, mc, "big", val)
	reply := fmt.Appendf(nil, "VALUE big 0 %d\r\n%s\r\n", len(val), val)
	const n = 200
	for _, tc := range []struct{ name, req, want string }{
		{"pipelined gets", strings.Repeat("get big\r\n", n), strings.Repeat(string(reply)+"END\r\n", n)},
		{"one multi-get", "get" + strings.Repeat(" big", n) + "\r\n", strings.Repeat(string(reply), n) + "END\r\n"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if _, err := c.Write([]byte(tc.req)); err != nil {
			t.Fatal(err)
		}
		grew := heapPeak(ms.HeapInuse, 2*time.Second)
		t.Logf("%s: heap grew by %d MiB with %d MB of replies unread", tc.name, grew>>20, len(tc.want)/1e6)
		if grew > 64<<20 {
			t.Errorf("%s: the heap grew by %d MiB while %d MB of replies waited for a reader", tc.name, grew>>20, len(tc.want)/1e6)
		}
		c.SetReadDeadline(time.Now().Add(replyWait))
		got := make([]byte, len(tc.want))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("%s: reading the replies: %v", tc.name, err)
		}
		if !bytes.Equal(got, []byte(tc.want)) {
			i := 0
			for i < len(got) && got[i] == tc.want[i] {
				i++
			}
			t.Errorf("%s: replies differ at byte %d: %.60q, want %.60q", tc.name, i, got[i:], tc.want[i:])
		}
		c.Close()
	}
}

// TestSlowMemoryBudget stores more large values than the slow path's
// budget holds: the least recently used go first, counted as evictions.
func TestSlowMemoryBudget(t *testing.T) {
	const budget = 8 << 20
	_, _, addr := startLoopback(t, Config{SlowMemory: budget})
	c, err := memcache.DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	vals := make([][]byte, 12)
	for i := range vals {
		vals[i] = mbValue(byte(i))
		setValue(t, c, fmt.Sprintf("k%d", i), vals[i])
		do(t, c, "get k0\r\n") // k0 stays the most recently used
	}
	// Eight values fit: k8..k11 pushed out k1..k4.
	for i, v := range vals {
		want := "END\r\n"
		if i == 0 || i > 4 {
			want = fmt.Sprintf("VALUE k%d 0 %d\r\n%s\r\nEND\r\n", i, len(v), v)
		}
		if got := do(t, c, fmt.Sprintf("get k%d\r\n", i)); got != want {
			t.Errorf("get k%d: %.40q, want %.40q", i, got, want)
		}
	}
	st := stats(t, c)
	if st["evictions"] != "4" || st["slow_items"] != "8" {
		t.Errorf("stats: evictions %s slow_items %s, want 4 and 8", st["evictions"], st["slow_items"])
	}
	if b, _ := strconv.Atoi(st["slow_bytes"]); b > budget || b < 8_000_000 {
		t.Errorf("slow_bytes %s with a budget of %d", st["slow_bytes"], budget)
	}
}

// TestOrphanedSlowValuesReclaimed leaves the slow path holding values no
// request will ask it for again: one whose marker the kernel's LRU evicted
// and XDP then replaced, and one that expired. The store must drop both
// on its own.
func TestOrphanedSlowValuesReclaimed(t *testing.T) {
	o, _, addr := startLoopback(t, Config{Entries: 64, MaxValue: 64})
	c, err := memcache.DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("o", 100_000)
	do(t, c, fmt.Sprintf("set orphan 0 0 %d\r\n%s\r\n", len(big), big))
	do(t, c, fmt.Sprintf("set expiring 0 1 %d\r\n%s\r\n", len(big), big))
	if st := stats(t, c); st["slow_items"] != "2" {
		t.Fatalf("slow_items %s, want 2", st["slow_items"])
	}
	xdpSet := func(key string) {
		t.Helper()
		act, r := run(t, o, frame.Datagram{Src: testClient, Dst: testServerPort(o), Payload: []byte("set " + key + " 0 0 1\r\nx\r\n")})
		if act != xdpTX || string(r) != "STORED\r\n" {
			t.Fatalf("XDP set %s: action %d %q", key, act, r)
		}
	}
	// The kernel's LRU keeps entries that were used (a lookup marks them)
	// ahead of those never used, and each CPU keeps its newest entries on a
	// list of its own, out of the LRU's reach: so fillers are used too, and
	// inserted on every CPU.
	now := uint64(time.Now().Unix())
	for round := 0; ; round++ {
		e, ok, err := o.load([]byte("orphan"), now)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || !e.slow {
			break
		}
		if round == 100 {
			t.Fatal("the kernel's LRU kept the marker through 100 rounds of 1000 inserts per CPU into 64 entries")
		}
		var wg sync.WaitGroup
		for cpu := range runtime.NumCPU() {
			wg.Go(func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				var set unix.CPUSet
				set.Set(cpu)
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					t.Error(err)
					return
				}
				for j := range 1000 {
					key := fmt.Sprintf("filler%d.%d.%d", round, cpu, j)
					xdpSet(key)
					run(t, o, frame.Datagram{Src: testClient, Dst: testServerPort(o), Payload: []byte("get " + key + "\r\n")})
				}
			})
		}
		wg.Wait()
	}
	xdpSet("orphan")

	deadline := time.Now().Add(10 * time.Second)
	for {
		st := stats(t, c)
		if st["slow_items"] == "0" && st["slow_bytes"] == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the slow path still holds %s values (%s bytes) that no marker stands for or that expired", st["slow_items"], st["slow_bytes"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := do(t, c, "get orphan expiring\r\n"); got != "VALUE orphan 0 1\r\nx\r\nEND\r\n" {
		t.Errorf("get after the reclaim: %q", got)
	}
}

// exchangeTCP writes in to a new connection to addr and reads until the
// server closes it or stays quiet for quiet; closed says which. A reset
// counts as closed: a server that closes with input unread sends one.
func exchangeTCP(t *testing.T, dial func() (net.Conn, error), in string, quiet time.Duration) (out string, closed bool) {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write([]byte(in))
	var got []byte
	buf := make([]byte, 64<<10)
	for {
		c.SetReadDeadline(time.Now().Add(quiet))
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		var ne net.Error
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
			return string(got), true
		case errors.As(err, &ne) && ne.Timeout():
			return string(got), false
		case err != nil:
			t.Fatalf("read: %v", err)
		}
	}
}

// TestLongLinesTCP sends lines without a newline: memcached closes the
// connection on one of more than 2048 bytes without sending the replies it
// has queued (those to requests since the last get), unless it starts with
// get or gets, which it buffers without a bound. The store closes those
// too, past maxLine.
func TestLongLinesTCP(t *testing.T) {
	l := newVethLab(t, Config{}, true)
	dialer := func(addr string) func() (net.Conn, error) {
		return func() (net.Conn, error) { return l.client.Dial("tcp", addr) }
	}
	store, mcd := dialer(l.storeAddr(false)), dialer(l.mcAddr(false))
	// Whether memcached sends a queued reply before it closes depends on
	// whether the long line came in the same read as the request before
	// it (it sends its queue when it waits for input), so both servers
	// may give either of the replies listed, and nothing else.
	for _, tc := range []struct {
		name, in string
		may      []string
	}{
		{"1 MiB without newline", strings.Repeat("x", 1<<20), []string{""}},
		{"queued reply, then 3000 bytes", "set k 0 0 1\r\n1\r\n" + strings.Repeat("x", 3000), []string{"", "STORED\r\n"}},
		{"get, queued reply, then 1 MiB", "get k\r\nset k 0 0 1\r\n2\r\n" + strings.Repeat("x", 1<<20),
			[]string{"VALUE k 0 1\r\n1\r\nEND\r\n", "VALUE k 0 1\r\n1\r\nEND\r\nSTORED\r\n"}},
	} {
		for i, dial := range []func() (net.Conn, error){mcd, store} {
			out, closed := exchangeTCP(t, dial, tc.in, 2*time.Second)
			who := []string{"memcached", "store"}[i]
			if !closed {
				t.Errorf("%s: %s kept the connection open", tc.name, who)
			}
			if !slices.Contains(tc.may, out) {
				t.Errorf("%s: %s replied %q, want one of %q", tc.name, who, out, tc.may)
			}
		}
	}
	get := "get " + strings.Repeat("k ", maxLine/2+1)
	out, closed := exchangeTCP(t, store, get, 5*time.Second)
	if !closed || out != "" {
		t.Errorf("a get line of %d bytes without newline: store replied %.60q and closed %v, want a silent close", len(get), out, closed)
	}
	if _, closed := exchangeTCP(t, mcd, get, time.Second); !closed {
		t.Logf("memcached buffers the %d-byte get line (its multi-gets are unbounded)", len(get))
	}
}

// TestConnectionLimits holds the store to its connection maximum, with
// memcached's refusal, and to its idle timeout.
func TestConnectionLimits(t *testing.T) {
	const maxConns, idle = 4, time.Second
	_, s, addr := startLoopback(t, Config{MaxConns: maxConns, IdleTimeout: idle})
	var open []*memcache.Client
	for range maxConns - 1 {
		c, err := memcache.DialTCP(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		do(t, c, "version\r\n")
		open = append(open, c)
	}
	half, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	half.Write([]byte("get half")) // a line never finished is idle too
	for s.conns() < maxConns {
		time.Sleep(time.Millisecond)
	}
	dial := func() (net.Conn, error) { return net.Dial("tcp", addr) }
	if out, closed := exchangeTCP(t, dial, "version\r\n", replyWait); out != "ERROR Too many open connections\r\n" || !closed {
		t.Errorf("connection %d: %q, closed %v; want memcached's refusal", maxConns+1, out, closed)
	}

	// Idle connections go after the timeout, the one at work stays.
	start := time.Now()
	for time.Since(start) < 3*idle {
		do(t, open[0], "version\r\n")
		time.Sleep(idle / 4)
	}
	if n := s.conns(); n != 1 {
		t.Errorf("%d connections after %s, %d of them idle: want 1", n, 3*idle, maxConns-1)
	}
	half.SetReadDeadline(time.Now().Add(replyWait))
	if n, err := half.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the connection stuck in a line: read %d, %v", n, err)
	}
	st := stats(t, open[0])
	if st["rejected_connections"] != "1" || st["idle_kicks"] != strconv.Itoa(maxConns-1) || st["max_connections"] != strconv.Itoa(maxConns) {
		t.Errorf("stats: rejected_connections %s idle_kicks %s max_connections %s", st["rejected_connections"], st["idle_kicks"], st["max_connections"])
	}
}

// BenchmarkFloodPeakRSS floods the store (`lab kv serve`, a process of its
// own) and memcached alike and reports the peak resident memory (VmHWM) of
// each: after a client pipelines 200 sets of distinct 1 MB values, and
// after clients pipeline 1000 gets of a 1 MB item, and one get of it with
// 1000 keys, without reading the replies for two seconds. Both run with
// their default memory limits.
//
// It needs root and builds the lab command: run it with
// `go test -run '^$' -bench FloodPeakRSS -benchtime 1x ./lab/kv`.
func BenchmarkFloodPeakRSS(b *testing.B) {
	topo := netlab.ForTest(b, netlab.Spec{
		Hosts: []netlab.HostSpec{{Name: "client", Role: "client", XDPPass: true}, {Name: "kv", Role: "kv"}, {Name: "mc", Role: "memcached"}},
		Links: []netlab.LinkSpec{{A: "client", B: "kv"}, {A: "client", B: "mc"}},
	})
	client, kvh, mch := topo.Host("client"), topo.Host("kv"), topo.Host("mc")
	bin := filepath.Join(b.TempDir(), "lab")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/xdplab/xdplab/lab/cmd/lab").CombinedOutput(); err != nil {
		b.Fatalf("build lab: %v\n%s", err, out)
	}
	store := kvh.CommandContext(b.Context(), bin, "kv", "serve", "--dev", kvh.Dev(), "--port", strconv.Itoa(labPort))
	var storeOut bytes.Buffer
	store.Stdout, store.Stderr = &storeOut, &storeOut
	store.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := store.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		store.Process.Signal(os.Interrupt)
		store.Wait()
	})
	mcd, err := peer.StartMemcached(b.Context(), mch, peer.MemcachedOptions{Port: labPort})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mcd.Stop() })

	val := mbValue(0)
	for b.Loop() {
		for _, tg := range []struct {
			name string
			pid  int
			addr string
		}{
			{"memcached", mcd.Cmd.Process.Pid, hostAddr(mch, false)},
			{"store", store.Process.Pid, hostAddr(kvh, false)},
		} {
			dial := func() net.Conn {
				for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
					c, err := client.Dial("tcp", tg.addr)
					if err == nil {
						return c
					}
					if time.Since(start) > 30*time.Second {
						b.Fatalf("%s: %v (%s)", tg.name, err, storeOut.String())
					}
				}
			}
			flood := func(req []byte, reply int, pause time.Duration) {
				c := dial()
				defer c.Close()
				go c.Write(req)
				time.Sleep(pause)
				c.SetReadDeadline(time.Now().Add(2 * time.Minute))
				if n, err := io.CopyN(io.Discard, c, int64(reply)); err != nil {
					b.Fatalf("%s: %d of %d reply bytes: %v", tg.name, n, reply, err)
				}
			}
			var sets []byte
			for i := range 200 {
				sets = fmt.Appendf(sets, "set k%d 0 0 %d\r\n%s\r\n", i, len(val), val)
			}
			flood(sets, 200*len("STORED\r\n"), 0)
			b.ReportMetric(vmHWM(b, tg.pid), tg.name+"-sets-peak-MiB")
			// The gets' peak on its own: 5 in clear_refs resets VmHWM (to
			// what is resident now).
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", tg.pid), []byte("5"), 0); err != nil {
				b.Fatal(err)
			}
			value := fmt.Appendf(nil, "VALUE big 0 %d\r\n%s\r\n", len(val), val)
			flood(fmt.Appendf(nil, "set big 0 0 %d\r\n%s\r\n", len(val), val), len("STORED\r\n"), 0)
			flood(bytes.Repeat([]byte("get big\r\n"), 1000), 1000*(len(value)+5), 2*time.Second)
			flood(append([]byte("get"+strings.Repeat(" big", 1000)), "\r\n"...), 1000*len(value)+5, 2*time.Second)
			b.ReportMetric(vmHWM(b, tg.pid), tg.name+"-gets-peak-MiB")
		}
	}
}

// vmHWM is a process's peak resident set size, in MiB.
func vmHWM(tb testing.TB, pid int) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(st)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" && f[2] == "kB" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb / 1024
		}
	}
	tb.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
