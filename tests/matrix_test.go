// Package tests is the kernel-matrix driver: `go test ./tests` builds the
// suites into test binaries once, boots each kernel of the pinned matrix,
// runs the binaries inside it and reports every case as
// TestMatrix/<kernel>/<suite>/<case>, then writes a per-kernel report.
//
//	go test ./tests                          # every pinned kernel
//	go test ./tests -kernels host            # the running kernel, no VM
//	go test ./tests -kernels 5.10,6.1 -run 'Matrix/5.10/functional'
//	go test ./tests -short                   # a quick subset
package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/kernels"
	"github.com/xdplab/xdplab/vmtest"
)

var (
	flagKernels = flag.String("kernels", "", "comma-separated kernels to run on (pinned names or 'host'); default: every pinned kernel")
	flagReport  = flag.String("report", "", "directory for report.md and report.json (default: results/ next to this file)")
)

// A suite is a set of test cases of one package, run inside each kernel.
type suite struct {
	name  string
	pkg   string   // package path relative to the module root
	run   []string // the tests (or benchmarks, with bench set)
	short []string // the tests under -short (none: skip the suite)
	bench bool     // run benchmarks, once each, and report what they write
	env   string   // extra environment for the guest command
}

var suites = []suite{
	{
		name:  "functional",
		pkg:   "lab/kv",
		run:   []string{"TestXDPBasic", "TestSlowPathSharesItemsWithXDP", "TestConcurrentIncrAndNoTear", "TestLRUEviction", "TestExpiryRules", "TestVethStore"},
		short: []string{"TestXDPBasic", "TestVethStore"},
	},
	{
		name:  "verifier",
		pkg:   "lab/kv",
		run:   []string{"TestVerifierStats", "TestCoarseClockProbe"},
		short: []string{"TestVerifierStats", "TestCoarseClockProbe"},
	},
	{
		// The proxy on the guest's kernel: verifier budget, the route
		// decision through BPF_PROG_TEST_RUN (skips before 5.15, saying
		// why), and end to end on veth with memcached and XDP-store
		// backends. The nutcracker comparison stays on the host: it
		// proves placement, which no kernel changes.
		name:  "proxy",
		pkg:   "lab/proxy",
		run:   []string{"TestVerifierStats", "TestXDPRouteMatchesRing", "TestXDPRouteKeys", "TestXDPRouteKeyBytes", "TestXDPFrames", "TestXDPReplies", "TestHealthMemcached", "TestXDPProxyMemcached", "TestXDPProxyEjects", "TestProxyFunctional"},
		short: []string{"TestVerifierStats", "TestXDPRouteMatchesRing", "TestProxyFunctional"},
	},
	{
		// Numbers for the report, never a pass/fail on speed: store vs
		// memcached over a veth pair in the guest, one short round each
		// (under TCG the absolute rates are the emulator's; the ratio is
		// the store's).
		name:  "throughput",
		pkg:   "lab/kv",
		run:   []string{"BenchmarkVethStoreVsMemcached"},
		bench: true,
		env:   "XDPLAB_BENCH_ROUNDS=1 XDPLAB_BENCH_ROUND=1s XDPLAB_BENCH_JSON=$XDPLAB_RESULTS/throughput-kv.json",
	},
	{
		// The same for the proxy: XDP proxy (UDP) vs nutcracker (TCP,
		// pipelined) in front of memcached and of XDP stores.
		name:  "proxy-throughput",
		pkg:   "lab/proxy",
		run:   []string{"BenchmarkProxyVsNutcracker"},
		bench: true,
		env:   "XDPLAB_BENCH_ROUNDS=1 XDPLAB_BENCH_ROUND=1s XDPLAB_BENCH_SOCKETS=4 XDPLAB_BENCH_INFLIGHT=16 XDPLAB_BENCH_JSON=$XDPLAB_RESULTS/throughput-proxy.json",
	},
}

// caseResult is one test case's outcome on one kernel.
type caseResult struct {
	Kernel  string  `json:"kernel"`
	Suite   string  `json:"suite"`
	Case    string  `json:"case"`
	Action  string  `json:"action"` // pass, fail, skip
	Seconds float64 `json:"seconds"`
	Output  string  `json:"-"`
}

type kernelRun struct {
	Kernel     string          `json:"kernel"`
	Release    string          `json:"release"`
	Accel      string          `json:"accel"`
	Seconds    float64         `json:"seconds"`
	Error      string          `json:"error,omitempty"`
	Cases      []caseResult    `json:"cases"`
	Verifier   json.RawMessage `json:"verifier,omitempty"`
	Throughput json.RawMessage `json:"throughput,omitempty"`
	// ProxyThroughput is the proxy-throughput suite's results.
	ProxyThroughput json.RawMessage `json:"proxy_throughput,omitempty"`
}

var (
	reportMu sync.Mutex
	report   []*kernelRun
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if len(report) > 0 {
		if err := writeReport(); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// buildSuites compiles each suite's package once, statically, so the
// binary runs in any guest over the host's root file system.
func buildSuites(t *testing.T, root, dir string) map[string]string {
	bins := map[string]string{}
	for _, s := range suites {
		if _, ok := bins[s.pkg]; ok {
			continue
		}
		bin := filepath.Join(dir, strings.ReplaceAll(s.pkg, "/", "_")+".test")
		cmd := exec.Command("go", "test", "-c", "-o", bin, "./"+s.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", s.pkg, err, out)
		}
		bins[s.pkg] = bin
	}
	return bins
}

func selectedKernels(t *testing.T) []*kernels.Kernel {
	m, err := kernels.Pinned()
	if err != nil {
		t.Fatal(err)
	}
	names := m.Names()
	if *flagKernels != "" {
		names = strings.Split(*flagKernels, ",")
	}
	var ks []*kernels.Kernel
	for _, n := range names {
		k, err := m.Lookup(strings.TrimSpace(n))
		if err != nil {
			t.Fatalf("-kernels: %v", err)
		}
		ks = append(ks, k)
	}
	return ks
}

func TestMatrix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel matrix needs root (BPF, namespaces, QEMU over the host's root): run as root")
	}
	root := moduleRoot(t)
	bins := buildSuites(t, root, t.TempDir())
	for _, k := range selectedKernels(t) {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			runKernel(t, root, k, bins)
		})
	}
}

func runKernel(t *testing.T, root string, k *kernels.Kernel, bins map[string]string) {
	ctx := t.Context()
	if !k.IsHost() {
		fctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
		err := k.Fetch(fctx, &kernels.Options{Log: tlog{t}})
		cancel()
		if err != nil {
			t.Fatalf("fetch %s: %v", k.Name, err)
		}
	}
	kr := &kernelRun{Kernel: k.Name, Release: k.Release}
	reportMu.Lock()
	report = append(report, kr)
	reportMu.Unlock()

	// One boot per kernel runs every suite, each writing test2json-able
	// output between markers, so the cost of booting is paid once.
	results := t.TempDir()
	var script strings.Builder
	script.WriteString("modprobe veth 2>/dev/null; mount -t bpf bpf /sys/fs/bpf 2>/dev/null; ")
	suiteRE, caseRE := runFilter()
	for i, s := range suites {
		names := s.run
		if testing.Short() {
			names = s.short
		}
		if suiteRE != nil && !suiteRE.MatchString(s.name) {
			continue
		}
		// Only what -run asks for runs in the guest.
		var keep []string
		for _, n := range names {
			if caseRE == nil || caseRE.MatchString(n) {
				keep = append(keep, n)
			}
		}
		if len(keep) == 0 {
			continue
		}
		pattern := "^(" + strings.Join(keep, "|") + ")$"
		sel := "-test.run '" + pattern + "'"
		if s.bench {
			sel = "-test.run '^$' -test.benchtime 1x -test.bench '" + pattern + "'"
		}
		fmt.Fprintf(&script, "echo '%s%d'; cd %s && %s %s -test.v=test2json -test.count=1 -test.timeout=15m %s; ",
			marker, i, filepath.Join(root, s.pkg), s.env, bins[s.pkg], sel)
	}
	script.WriteString("true")

	var stdout bytes.Buffer
	start := time.Now()
	res, err := vmtest.Run(ctx, k, []string{script.String()}, vmtest.Options{
		CPUs:       2,
		Memory:     "2G",
		Timeout:    25 * time.Minute,
		ResultsDir: results,
		Stdout:     &stdout,
		Stderr:     tlog{t},
	})
	kr.Seconds = time.Since(start).Seconds()
	if res != nil {
		kr.Accel = res.Accel
		if res.Kernel != "" {
			kr.Release = res.Kernel
		}
	}
	if err != nil {
		kr.Error = err.Error()
		t.Errorf("%s: %v", k.Name, err)
		if res != nil {
			t.Logf("guest kernel log (tail):\n%s", tail(res.KernelLog, 40))
		}
	}
	// Each program's package writes its own verifier file; the report
	// holds them as one list.
	var progs []json.RawMessage
	for _, f := range []string{"verifier-kv.json", "verifier-proxy.json"} {
		var ps []json.RawMessage
		if b, err := os.ReadFile(filepath.Join(results, f)); err == nil && json.Unmarshal(b, &ps) == nil {
			progs = append(progs, ps...)
		}
	}
	if len(progs) > 0 {
		kr.Verifier, _ = json.Marshal(progs)
	}
	if b, err := os.ReadFile(filepath.Join(results, "throughput-kv.json")); err == nil {
		kr.Throughput = b
	}
	if b, err := os.ReadFile(filepath.Join(results, "throughput-proxy.json")); err == nil {
		kr.ProxyThroughput = b
	}
	for i, s := range suites {
		out := section(stdout.Bytes(), i)
		if out == nil {
			continue
		}
		t.Run(s.name, func(t *testing.T) { replay(t, kr, s, out) })
	}
}

// runFilter reads `go test -run 'Matrix/KERNEL/SUITE/CASE'` for the parts
// below the kernel, so a guest runs only the cases asked for.
func runFilter() (suite, tcase *regexp.Regexp) {
	f := flag.Lookup("test.run")
	if f == nil {
		return nil, nil
	}
	parts := strings.Split(f.Value.String(), "/")
	if len(parts) > 2 && parts[2] != "" {
		suite, _ = regexp.Compile(parts[2])
	}
	if len(parts) > 3 && parts[3] != "" {
		tcase, _ = regexp.Compile(parts[3])
	}
	return suite, tcase
}

const marker = "=== xdplab suite "

// section returns the output of suite i.
func section(out []byte, i int) []byte {
	start := bytes.Index(out, []byte(fmt.Sprintf("%s%d\n", marker, i)))
	if start < 0 {
		return nil
	}
	rest := out[start+len(marker)+len(fmt.Sprint(i))+1:]
	if end := bytes.Index(rest, []byte(marker)); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

// event is cmd/test2json's record.
type event struct {
	Action  string
	Test    string
	Elapsed float64
	Output  string
}

// replay turns a guest test binary's output into subtests of this run, so
// `-run Matrix/5.10/functional/TestXDPBasic` and failures read as usual.
func replay(t *testing.T, kr *kernelRun, s suite, out []byte) {
	cmd := exec.Command("go", "tool", "test2json", "-t")
	cmd.Stdin = bytes.NewReader(out)
	js, err := cmd.Output()
	if err != nil {
		t.Fatalf("test2json: %v\n%s", err, out)
	}
	outputs := map[string]*strings.Builder{}
	var order []string
	binary := "" // the test binary's own verdict
	final := map[string]event{}
	sc := bufio.NewScanner(bytes.NewReader(js))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil || strings.Contains(e.Test, "/") {
			continue
		}
		if e.Test == "" {
			if e.Action == "pass" || e.Action == "fail" {
				binary = e.Action
			}
			continue
		}
		if outputs[e.Test] == nil {
			outputs[e.Test] = &strings.Builder{}
			order = append(order, e.Test)
		}
		switch e.Action {
		case "output":
			outputs[e.Test].WriteString(e.Output)
		case "pass", "fail", "skip":
			final[e.Test] = e
		}
	}
	if len(order) == 0 {
		t.Fatalf("no test ran in the guest:\n%s", out)
	}
	for _, name := range order {
		e, done := final[name]
		c := caseResult{Kernel: kr.Kernel, Suite: s.name, Case: name, Action: e.Action, Seconds: e.Elapsed, Output: outputs[name].String()}
		switch {
		case !done && s.bench && binary == "pass":
			c.Action = "pass" // a benchmark has no verdict of its own
		case !done:
			c.Action = "fail" // the binary died or timed out mid-test
		}
		reportMu.Lock()
		kr.Cases = append(kr.Cases, c)
		reportMu.Unlock()
		t.Run(name, func(t *testing.T) {
			switch c.Action {
			case "pass":
				t.Log(c.Output)
			case "skip":
				t.Skip(c.Output)
			default:
				t.Error(c.Output)
			}
		})
	}
}

func writeReport() error {
	dir := *flagReport
	if dir == "" {
		dir = "results"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sort.Slice(report, func(i, j int) bool { return report[i].Kernel < report[j].Kernel })
	b, err := json.MarshalIndent(map[string]any{"time": time.Now().UTC().Format(time.RFC3339), "kernels": report}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	var md strings.Builder
	md.WriteString("| kernel | release | accel | boot+run s | pass | fail | skip | kv_xdp insns verified | proxy_xdp insns verified | GET ops/s store / memcached | GET ops/s XDP proxy / nutcracker, memcached backends | same, XDP-store backends |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, kr := range report {
		n := map[string]int{}
		for _, c := range kr.Cases {
			n[c.Action]++
		}
		fmt.Fprintf(&md, "| %s | %s | %s | %.0f | %d | %d | %d | %s | %s | %s | %s | %s |\n", kr.Kernel, kr.Release, kr.Accel, kr.Seconds, n["pass"], n["fail"], n["skip"],
			verifiedInsns(kr.Verifier, "kv_xdp"), verifiedInsns(kr.Verifier, "proxy_xdp"),
			getThroughput(kr.Throughput, "store", "memcached"),
			getThroughput(kr.ProxyThroughput, "xdp-proxy→memcached", "nutcracker→memcached"),
			getThroughput(kr.ProxyThroughput, "xdp-proxy→kv", "nutcracker→kv"))
	}
	md.WriteString("\nFailures and skips:\n\n")
	for _, kr := range report {
		if kr.Error != "" {
			fmt.Fprintf(&md, "- %s: %s\n", kr.Kernel, kr.Error)
		}
		for _, c := range kr.Cases {
			if c.Action != "pass" {
				fmt.Fprintf(&md, "- %s/%s/%s: %s\n", c.Kernel, c.Suite, c.Case, c.Action)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nkernel matrix (%s):\n%s", filepath.Join(dir, "report.md"), md.String())
	return nil
}

// verifiedInsns is the most instructions the verifier walked for program
// (of its variants), or "-".
func verifiedInsns(raw json.RawMessage, program string) string {
	var st []struct {
		Program string `json:"program"`
		Insns   uint32 `json:"verified_insns"`
	}
	if json.Unmarshal(raw, &st) != nil {
		return "-"
	}
	max := uint32(0)
	for _, s := range st {
		if s.Program == program && s.Insns > max {
			max = s.Insns
		}
	}
	if max == 0 {
		return "-"
	}
	return fmt.Sprint(max)
}

// getThroughput summarises a GET-only comparison of a throughput suite:
// target a's ops/s against b's.
func getThroughput(raw json.RawMessage, a, b string) string {
	var rs []struct {
		Target   string  `json:"target"`
		Ops      float64 `json:"ops_per_sec"`
		Workload struct {
			GetRatio float64 `json:"get_ratio"`
		} `json:"workload"`
	}
	if json.Unmarshal(raw, &rs) != nil {
		return "-"
	}
	ops := map[string]float64{}
	for _, r := range rs {
		if r.Workload.GetRatio == 1 {
			ops[r.Target] = r.Ops
		}
	}
	if ops[a] == 0 || ops[b] == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f / %.0f = %.2f×", ops[a], ops[b], ops[a]/ops[b])
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tlog streams a guest's stderr and the fetcher's progress into the test log.
type tlog struct{ t *testing.T }

func (l tlog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
