package kv

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/internal/rerun"
	"golang.org/x/sys/unix"

	"github.com/xdplab/xdplab/lab/internal/frame"
)

// Benchmarks of the XDP program alone, through BPF_PROG_TEST_RUN (no
// network). Each reports
//
//   - ns/req: cold, one request per BPF_PROG_TEST_RUN (Repeat 1, see
//     below): the kernel's own duration of that single run (the duration
//     field, which ebpf.Program.Benchmark returns), leaving out the syscall
//     but not the runner's two clock reads (~35 ns on the host kernel:
//     Baseline/OtherPort minus Baseline/OtherPortRepeat), and with caches
//     and branch predictors as a syscall and the test-run setup left them.
//   - warm-ns/req: the same request run 20,000 times in one
//     BPF_PROG_TEST_RUN through lab/internal/rerun's harness, which puts the
//     request back before each run and tail-calls the store; the harness's
//     own cost (harness-ns/req: the harness tail-calling a trivial program)
//     is subtracted. The median of 5 such calls. This is the per-request
//     figure the targets mean: a store under load runs warm. Needs
//     5.18+ (the harness's helpers); older kernels report ns/req only.
//   - prog-ns/req: the program's run time as `bpftool prog show` reports it
//     (run_time_ns/run_cnt with BPF stats enabled), over cold runs, measured
//     in a second pass so the stats' own clock reads do not inflate ns/req.
//
// Repeat: BPF_PROG_TEST_RUN does not restore the packet between repeats, and
// the store rewrites every request it answers into its reply in place, so
// from the second repeat on the program would see its own reply (to the
// client's port) and pass it in a few ns. Requests answered with XDP_TX
// therefore run cold with Repeat 1, one syscall each (each costs
// milliseconds of wall time: run them with -benchtime 2000x, not more), and
// warm through the harness. BPF_F_TEST_XDP_LIVE_FRAMES does not help:
// lab/internal/rerun says why. Requests that leave the packet untouched
// (Baseline, SetNoreply) also run with a large Repeat, which shows the
// timer's share.
//
//	go test ./lab/kv -run '^$' -bench 'XDP$/GetHit$' -benchtime 2000x -count 3
//
// Where the time goes inside the program: `perf record -g -e cpu-clock` on
// the test binary while it runs BenchmarkXDP/GetHit shows each BPF
// function (kv_xdp, process, next_tok, load_key, get_one, ...) and helper
// by name, since the JIT registers them in kallsyms.

const (
	benchKeyLen = 16
	benchValLen = 100
)

// benchConfig keeps the per-source reply budget (udp_rate) on the path,
// as a store serves by default, but too large to run out: a warm run sends
// one source 20,000 replies in a few ms, past the default 4 MiB burst.
var benchConfig = Config{UDPRate: 1<<32 - 1, UDPBurst: 1 << 40}

func benchKey(i int) string { return fmt.Sprintf("key:%0*d", benchKeyLen-4, i) }

// benchCase is one request through the program.
type benchCase struct {
	name   string
	src    netip.AddrPort
	dst    netip.AddrPort
	req    string
	want   uint32 // XDP action
	repeat uint32 // 1 unless the program leaves the packet as it was
	check  func(reply string) error
}

var (
	bench4Client = netip.MustParseAddrPort("198.18.0.1:40000")
	bench4Server = netip.MustParseAddrPort("198.18.0.2:11211")
	bench6Client = netip.MustParseAddrPort("[fd00::1]:40000")
	bench6Server = netip.MustParseAddrPort("[fd00::2]:11211")
)

func setReq(key string, n int) string {
	return fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, n, strings.Repeat("v", n))
}

func getReq(keys ...string) string { return "get " + strings.Join(keys, " ") + "\r\n" }

func wantPrefix(p string) func(string) error {
	return func(r string) error {
		if !strings.HasPrefix(r, p) {
			return fmt.Errorf("reply %.60q, want prefix %q", r, p)
		}
		return nil
	}
}

func wantValues(n int) func(string) error {
	return func(r string) error {
		if c := strings.Count(r, "VALUE "); c != n || !strings.HasSuffix(r, "END\r\n") {
			return fmt.Errorf("reply has %d values (want %d): %.80q", c, n, r)
		}
		return nil
	}
}

func BenchmarkXDP(b *testing.B) {
	o := loadForTest(b, benchConfig)
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = benchKey(i)
		mustRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: setReq(keys[i], benchValLen), want: 3, check: wantPrefix("STORED")})
	}
	other := netip.AddrPortFrom(bench4Server.Addr(), 11212)
	cases := []benchCase{
		// Not for the store (other port): the cost every non-memcached
		// packet pays, and the runner's fixed cost (Repeat 1 vs many).
		{name: "Baseline/OtherPort", src: bench4Client, dst: other, req: getReq(keys[0]), want: 2, repeat: 1},
		{name: "Baseline/OtherPortRepeat", src: bench4Client, dst: other, req: getReq(keys[0]), want: 2, repeat: 4096},
		{name: "GetHit", src: bench4Client, dst: bench4Server, req: getReq(keys[0]), want: 3, repeat: 1, check: wantValues(1)},
		{name: "GetMiss", src: bench4Client, dst: bench4Server, req: getReq("nokey:0000000000"), want: 3, repeat: 1, check: wantValues(0)},
		{name: "Set", src: bench4Client, dst: bench4Server, req: setReq(keys[1], benchValLen), want: 3, repeat: 1, check: wantPrefix("STORED\r\n")},
		{name: "MultiGet10", src: bench4Client, dst: bench4Server, req: getReq(keys...), want: 3, repeat: 1, check: wantValues(10)},
		{name: "GetHitIPv6", src: bench6Client, dst: bench6Server, req: getReq(keys[0]), want: 3, repeat: 1, check: wantValues(1)},
		// noreply leaves the packet untouched (XDP_DROP), so Repeat works:
		// compare with Set to see what Repeat 1 adds.
		{name: "SetNoreply", src: bench4Client, dst: bench4Server, req: strings.Replace(setReq(keys[2], benchValLen), "\r\n", " noreply\r\n", 1), want: 1, repeat: 1},
		{name: "SetNoreplyRepeat", src: bench4Client, dst: bench4Server, req: strings.Replace(setReq(keys[2], benchValLen), "\r\n", " noreply\r\n", 1), want: 1, repeat: 4096},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { benchRun(b, o, c) })
	}
	// The same GET hit from a store that sends IPv4 replies without a
	// UDP checksum (Config.UDPZeroChecksum).
	zc := benchConfig
	zc.UDPZeroChecksum = true
	oz := loadForTest(b, zc)
	mustRun(b, oz, benchCase{src: bench4Client, dst: bench4Server, req: setReq(keys[0], benchValLen), want: 3, check: wantPrefix("STORED")})
	b.Run("GetHit/UDPZeroChecksum", func(b *testing.B) {
		benchRun(b, oz, benchCase{src: bench4Client, dst: bench4Server, req: getReq(keys[0]), want: 3, repeat: 1, check: wantValues(1)})
	})
}

// BenchmarkXDPModel varies one size at a time on a GET hit and a SET, to
// model what the per-byte loops (tokenizer, key copy and hash, value copy,
// reply copy and checksum) cost: the slope between sizes is their cost per
// byte, the intercept the fixed cost.
func BenchmarkXDPModel(b *testing.B) {
	o := loadForTest(b, benchConfig)
	for _, vl := range []int{1, 100, 400, 1000} {
		key := fmt.Sprintf("val%04d:%s", vl, strings.Repeat("k", benchKeyLen-8))
		mustRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: setReq(key, vl), want: 3, check: wantPrefix("STORED")})
		b.Run(fmt.Sprintf("GetHit/key=%d/value=%d", benchKeyLen, vl), func(b *testing.B) {
			benchRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: getReq(key), want: 3, repeat: 1, check: wantValues(1)})
		})
		b.Run(fmt.Sprintf("Set/key=%d/value=%d", benchKeyLen, vl), func(b *testing.B) {
			benchRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: setReq(key, vl), want: 3, repeat: 1, check: wantPrefix("STORED")})
		})
	}
	for _, kl := range []int{4, 16, 64, 250} {
		key := fmt.Sprintf("k%03d", kl) + strings.Repeat("k", kl-4)
		mustRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: setReq(key, benchValLen), want: 3, check: wantPrefix("STORED")})
		b.Run(fmt.Sprintf("GetHit/key=%d/value=%d", kl, benchValLen), func(b *testing.B) {
			benchRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: getReq(key), want: 3, repeat: 1, check: wantValues(1)})
		})
	}
	// Parts of a GET, by difference: Unknown is the entry, the copy of the
	// payload into scratch, the line scan and the dispatch; GetMiss/key=1
	// adds a lookup and the whole reply path (rewrite, adjust_tail, copy
	// out, checksums); GetHit/key=1/value=1 adds the item (lock, key
	// compare, value copy, VALUE line); MultiGetMiss the cost per key.
	mustRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: setReq("a", 1), want: 3, check: wantPrefix("STORED")})
	// The same item with 10-digit flags: what formatting numbers costs
	// (the program divides by 10 twice per digit).
	mustRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: "set f 4294967295 0 1\r\nv\r\n", want: 3, check: wantPrefix("STORED")})
	for _, c := range []benchCase{
		{name: "Parts/Unknown", req: "xyz\r\n", want: 2},
		{name: "Parts/GetMiss/key=1", req: getReq("z"), want: 3, check: wantValues(0)},
		{name: "Parts/GetMiss/key=16", req: getReq("nokey:0000000000"), want: 3, check: wantValues(0)},
		{name: "Parts/GetHit/key=1/value=1", req: getReq("a"), want: 3, check: wantValues(1)},
		{name: "Parts/GetHit/key=1/value=1/flags=4294967295", req: getReq("f"), want: 3, check: wantValues(1)},
		{name: "Parts/MultiGetMiss/keys=10/key=1", req: getReq(strings.Split("b c d e g h i j k l", " ")...), want: 3, check: wantValues(0)},
	} {
		c.src, c.dst, c.repeat = bench4Client, bench4Server, 1
		b.Run(c.name, func(b *testing.B) { benchRun(b, o, c) })
	}
	for _, n := range []int{1, 2, 5, 10} {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = benchKey(100 + i)
			mustRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: setReq(keys[i], benchValLen), want: 3, check: wantPrefix("STORED")})
		}
		b.Run(fmt.Sprintf("MultiGet/keys=%d", n), func(b *testing.B) {
			benchRun(b, o, benchCase{src: bench4Client, dst: bench4Server, req: getReq(keys...), want: 3, repeat: 1, check: wantValues(n)})
		})
	}
}

// mustRun sends c once and checks the action and reply.
func mustRun(b *testing.B, o *Objects, c benchCase) {
	b.Helper()
	act, reply := run(b, o, frame.Datagram{Src: c.src, Dst: c.dst, ID: 1, Payload: []byte(c.req)})
	if act != c.want {
		b.Fatalf("%s: action %d, want %d (reply %.60q)", c.name, act, c.want, reply)
	}
	if c.check != nil {
		if err := c.check(string(reply)); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
	}
}

func benchRun(b *testing.B, o *Objects, c benchCase) {
	mustRun(b, o, c)
	prog := o.Program()
	in := frame.Datagram{Src: c.src, Dst: c.dst, ID: 1, Payload: []byte(c.req)}.Frame()
	runs := func(n int) (time.Duration, error) {
		var total time.Duration
		for range n {
			ret, d, err := prog.Benchmark(in, int(c.repeat), nil)
			if err != nil {
				return 0, err
			}
			if ret != c.want {
				return 0, fmt.Errorf("action %d, want %d", ret, c.want)
			}
			total += d
		}
		return total, nil
	}
	b.ResetTimer()
	total, err := runs(b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/req")
	reportWarm(b, o, in, c.want)

	// Second pass with BPF stats on: run_time_ns/run_cnt, as bpftool shows.
	// EnableStats is reference counted, so it leaves a sysctl someone else
	// set alone.
	st, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Logf("BPF stats unavailable: %v", err)
		return
	}
	defer st.Close()
	before, err1 := prog.Stats()
	_, err = runs(min(b.N, 200000))
	after, err2 := prog.Stats()
	if err != nil || err1 != nil || err2 != nil {
		b.Fatal(err, err1, err2)
	}
	if n := after.RunCount - before.RunCount; n > 0 {
		b.ReportMetric(float64((after.Runtime-before.Runtime).Nanoseconds())/float64(n), "prog-ns/req")
	}
}

// reportWarm reports warm-ns/req and harness-ns/req for frame through the
// store (see the top), or logs why it cannot on this kernel. A warm run
// checks the last run's action only, so the store's own counters must show
// every run answered (or dropped) as wanted: a run cut short (the rate
// limit, say) would make the figure look better than it is.
func reportWarm(b *testing.B, o *Objects, frame []byte, want uint32) {
	b.Helper()
	before := xdpCounts(b, o)
	w, h, err := rerun.Warm(o.Program(), frame, want)
	if err != nil {
		b.Logf("no warm figure: %v", err)
		return
	}
	after := xdpCounts(b, o)
	runs := uint64(rerun.Runs * rerun.Calls)
	switch want {
	case 3: // XDP_TX
		if d := after.Tx - before.Tx; d < runs {
			b.Fatalf("warm: %d of %d runs answered (tx), %d rate drops", d, runs, after.RateDrop-before.RateDrop)
		}
	case 1: // XDP_DROP
		if d := after.Drop - before.Drop; d < runs {
			b.Fatalf("warm: %d of %d runs dropped as noreply", d, runs)
		}
	}
	b.ReportMetric(float64(w.Nanoseconds()), "warm-ns/req")
	b.ReportMetric(float64(h.Nanoseconds()), "harness-ns/req")
}

// xdpCounts sums the XDP path's counters (scratch slot 0) over the CPUs.
func xdpCounts(b *testing.B, o *Objects) kvKvStats {
	b.Helper()
	var per []kvScratch
	if err := o.objs.Scratch.Lookup(uint32(0), &per); err != nil {
		b.Fatal(err)
	}
	var sum kvKvStats
	for i := range per {
		addStats(&sum, &per[i].St)
	}
	return sum
}
