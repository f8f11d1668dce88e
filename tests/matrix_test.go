// Package tests is the kernel-matrix driver: `go test ./tests` builds the
// suites into test binaries once, boots each kernel of the pinned matrix,
// runs the binaries inside it and reports every case as
// TestMatrix/<kernel>/<suite>/<case>, then writes a per-kernel report.
//
//	go test -timeout 60m ./tests                          # every pinned kernel
//	go test ./tests -kernels host                         # the running kernel, no VM
//	go test -timeout 30m ./tests -kernels 5.10 -run 'Matrix/5.10/kv'
//	go test -timeout 60m ./tests -short                   # -short in the guests, no benchmarks
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/kernels"
	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/report"
	"github.com/xdplab/xdplab/lab/verifier"
	"github.com/xdplab/xdplab/vmtest"
)

var (
	flagKernels = flag.String("kernels", os.Getenv("XDPLAB_KERNELS"), "comma-separated kernels to run on (pinned names or 'host'); default: $XDPLAB_KERNELS, else every pinned kernel")
	flagBackend = flag.String("backend", envOr("XDPLAB_BACKEND", string(vmtest.Direct)), "how guests boot: direct (vmtest's own init) or vng (virtme-ng); default: $XDPLAB_BACKEND, else direct")
	flagReport  = flag.String("report", "", "directory for report.md and report.json (default: results/ next to this file)")
)

// A suite is one package's tests, run whole inside each kernel. The matrix
// names packages, never tests: a new or renamed test is in its suite at
// once, and a test that needs a kernel feature skips, or fails where the
// kernel must have it, by itself (lab/internal/testutils). -short reaches
// the guests' test binaries as -test.short.
type suite struct {
	name string
	pkg  string // package path relative to the module root
	// bench, when set, runs the package's benchmarks matching it (once
	// each) instead of its tests, for the numbers they write.
	bench string
	env   string // extra environment for the guest command
}

// The packages whose tests touch the kernel: BPF programs, veth pairs,
// namespaces, servers on them. Pure Go packages (the codec, the load
// generator, the report, the ledger) and the command's tests (they build
// the lab binary) stay on the host, in make test-host.
var suites = []suite{
	{name: "kv", pkg: "lab/kv"},
	{name: "proxy", pkg: "lab/proxy"},
	{name: "netlab", pkg: "lab/netlab"},
	{name: "peer", pkg: "lab/peer"},
	{name: "bpfload", pkg: "lab/bpfload"},
	// The benchmarks' reflector (bpf/reflect.bpf.c): it loads and answers
	// byte for byte on every kernel the throughput suite measures it on.
	{name: "reflector", pkg: "lab/bench/reflector"},
	// The verifier's limits on this kernel, found by search, and programs
	// every kernel must refuse.
	{name: "limits", pkg: "lab/verifier/limits"},
	// The workshop: every lesson's reference solution passes its checker
	// and every untouched starter fails at the check it should, so a
	// lesson that stops working on a kernel fails the build, not a room.
	{name: "workshop", pkg: "lab/workshop"},
	{
		// Numbers for the report, never a pass/fail on speed: the side-by-
		// side comparisons (by convention Benchmark*Vs*), one short round
		// each. Under TCG the absolute rates are the emulator's; the
		// ratios are the systems'. Store vs memcached and vs the
		// reflector (the ceiling), each with the pinned client and the
		// netpoll one, over veth pairs:
		name:  "throughput",
		pkg:   "lab/kv",
		bench: "Vs",
		env:   "XDPLAB_BENCH_ROUNDS=1 XDPLAB_BENCH_ROUND=1s XDPLAB_BENCH_JSON=$XDPLAB_RESULTS/throughput-kv.json",
	},
	{
		// XDP proxy (UDP) vs nutcracker (TCP, pipelined) in front of
		// memcached and of XDP stores.
		name:  "proxy-throughput",
		pkg:   "lab/proxy",
		bench: "Vs",
		env:   "XDPLAB_BENCH_ROUNDS=1 XDPLAB_BENCH_ROUND=1s XDPLAB_BENCH_SOCKETS=4 XDPLAB_BENCH_INFLIGHT=16 XDPLAB_BENCH_JSON=$XDPLAB_RESULTS/throughput-proxy.json",
	},
}

var (
	reportMu sync.Mutex
	matrix   = report.New()
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if len(matrix.Kernels) > 0 {
		dir := reportDir()
		if err := matrix.Write(dir); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			code = 1
		}
		fmt.Printf("\nkernel matrix (%s):\n%s", filepath.Join(dir, report.MarkdownFile), matrix.Markdown())
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
	ks, err := m.Select(*flagKernels)
	if err != nil {
		t.Fatalf("-kernels: %v", err)
	}
	return ks
}

func TestMatrix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel matrix needs root (BPF, namespaces, QEMU over the host's root): run as root")
	}
	if b := vmtest.Backend(*flagBackend); b != vmtest.Direct && b != vmtest.VNG {
		t.Fatalf("-backend %q: want %s or %s", b, vmtest.Direct, vmtest.VNG)
	}
	ks := selectedKernels(t)
	checkTimeout(t, ks)
	root := moduleRoot(t)
	bins := buildSuites(t, root, t.TempDir())
	for _, k := range ks {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			runKernel(t, root, k, bins)
		})
	}
}

// checkTimeout fails at once, saying what to do, when go test's -timeout
// (10 minutes unless given) cannot fit the kernels asked for, rather than
// panicking at the deadline with the work half done. The estimates are
// this project's suites on 2-core machines (10 minutes a kernel under TCG,
// measured 9.5 on 5.10 beside two other guests; 3 with KVM), a VM per slot
// at a time.
func checkTimeout(t *testing.T, ks []*kernels.Kernel) {
	deadline, ok := t.Deadline()
	if !ok {
		return
	}
	accel, _ := vmtest.Accel()
	per := 10 * time.Minute
	if accel == "kvm" {
		per = 3 * time.Minute
	}
	if testing.Short() {
		per /= 2
	}
	vms := 0
	need := time.Duration(0)
	for _, k := range ks {
		if k.IsHost() {
			need += time.Minute
		} else {
			vms++
		}
	}
	rounds := (vms + vmtest.Slots() - 1) / vmtest.Slots()
	need += time.Duration(rounds) * per
	if left := time.Until(deadline); left < need {
		// Half as much again, in whole ten minutes, for a loaded machine.
		suggest := (need*3/2/(10*time.Minute) + 1) * 10 * time.Minute
		t.Fatalf("%d kernel(s) need about %s here (%s, %d VMs at a time) and -timeout leaves %s: run go test -timeout %s ./tests, or fewer kernels (-kernels 6.1)",
			len(ks), need.Round(time.Minute), accel, vmtest.Slots(), left.Round(time.Second), strings.TrimSuffix(suggest.String(), "0s"))
	}
}

func runKernel(t *testing.T, root string, k *kernels.Kernel, bins map[string]string) {
	ctx := t.Context()
	kr := &report.Kernel{Kernel: k.Name, Release: k.Release, Backend: *flagBackend}
	if k.IsHost() {
		kr.Backend = "" // no VM
	}
	reportMu.Lock()
	matrix.Kernels = append(matrix.Kernels, kr)
	reportMu.Unlock()
	start := time.Now()
	defer func() { kernelDone(kr, time.Since(start)) }()
	if !k.IsHost() {
		fetched := k.Cached()
		if !fetched {
			progressf("%s: fetching %s (%d MB download)", k.Name, k.Release, k.DownloadSize()>>20)
		}
		fctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
		err := k.Fetch(fctx, &kernels.Options{Log: tlog{t}})
		cancel()
		if err != nil {
			kr.Error = fmt.Sprintf("fetch %s: %v", k.Name, err)
			t.Fatal(kr.Error)
		}
		if !fetched {
			progressf("%s: fetched in %.0fs", k.Name, time.Since(start).Seconds())
		}
	}

	// One boot per kernel runs every suite, each writing test2json-able
	// output between markers, so the cost of booting is paid once.
	results := t.TempDir()
	var script strings.Builder
	suiteRE, caseRE := runFilter()
	for i, s := range suites {
		if suiteRE != nil && !suiteRE.MatchString(s.name) {
			continue
		}
		// Only what -run asks for runs in the guest.
		sel := "-test.run '.'"
		if caseRE != nil {
			sel = "-test.run '" + caseRE.String() + "'"
		}
		if s.bench != "" {
			if testing.Short() {
				continue // numbers take rounds; -short is for a quick verdict
			}
			pattern := s.bench
			if caseRE != nil {
				pattern = caseRE.String() // what -run names, if it is one
			}
			sel = "-test.run '^$' -test.benchtime 1x -test.bench '" + pattern + "'"
		}
		if testing.Short() {
			sel += " -test.short"
		}
		fmt.Fprintf(&script, "echo '%s%d'; cd %s && %s %s -test.v=test2json -test.count=1 -test.timeout=15m %s; ",
			marker, i, filepath.Join(root, s.pkg), s.env, bins[s.pkg], sel)
	}
	script.WriteString("true")

	boot := time.Now()
	watch := newSuiteWatch(k, boot)
	if k.IsHost() {
		progressf("%s: running the suites on the running kernel %s", k.Name, k.Release)
	}
	res, err := vmtest.Run(ctx, k, []string{script.String()}, vmtest.Options{
		Booting: func() {
			boot = time.Now()
			watch.start = boot
			accel, why := vmtest.Accel()
			progressf("%s: booting %s (%s, %s: %s)", k.Name, k.Release, kr.Backend, accel, why)
		},
		Backend:    vmtest.Backend(*flagBackend),
		CPUs:       2,
		Memory:     "2G",
		Timeout:    25 * time.Minute,
		ResultsDir: results,
		Stdout:     watch,
		Stderr:     tlog{t},
	})
	watch.finish()
	kr.Seconds = time.Since(boot).Seconds()
	if res != nil {
		kr.Accel = res.Accel
		if res.Kernel != "" {
			kr.Release = res.Kernel
		}
		// The whole guest kernel log, for CI to keep as an artifact.
		if res.KernelLog != "" {
			if err := os.MkdirAll(reportDir(), 0o755); err == nil {
				os.WriteFile(filepath.Join(reportDir(), report.GuestLogFile(k.Name)), []byte(res.KernelLog), 0o644)
			}
		}
	}
	if err != nil {
		kr.Error = err.Error()
		if res != nil {
			kr.Error += "\nguest kernel log (tail):\n" + res.KernelLogTail(40)
		}
		t.Errorf("%s: %s", k.Name, kr.Error)
	}
	// Each package's verifier test writes its own verifier-NAME.json
	// (testutils.RecordVerifierStats); the report holds them as one list.
	progs, err := report.ReadVerifier(results)
	if err != nil {
		t.Errorf("%s: verifier: %v", k.Name, err)
	}
	if len(progs) > 0 {
		kr.Verifier, _ = json.Marshal(progs)
	}
	if ls, err := report.ReadLimits(results); err != nil {
		t.Errorf("%s: limits: %v", k.Name, err)
	} else {
		kr.Limits = ls
	}
	if rs, err := report.ReadRoom(results); err != nil {
		t.Errorf("%s: room: %v", k.Name, err)
	} else {
		kr.Room = rs
	}
	if fs, err := report.ReadFeatures(results); err != nil {
		t.Errorf("%s: features: %v", k.Name, err)
	} else {
		kr.Features = fs
	}
	if b, err := os.ReadFile(filepath.Join(results, "throughput-kv.json")); err == nil {
		kr.Throughput = b
	}
	if b, err := os.ReadFile(filepath.Join(results, "throughput-proxy.json")); err == nil {
		kr.ProxyThroughput = b
	}
	for i, s := range suites {
		if res == nil {
			break
		}
		out := section(res.Stdout, i)
		ran := bytes.Contains(out, []byte("=== RUN")) || bytes.Contains(out, []byte("Benchmark"))
		if out == nil || caseRE != nil && !ran {
			continue // as go test does, -run matching nothing here is no failure
		}
		t.Run(s.name, func(t *testing.T) { replay(t, kr, s, out) })
	}
	if len(progs) > 0 {
		t.Run("ledger", func(t *testing.T) { checkLedger(t, root, kr, progs) })
	}
}

// checkLedger holds the kernel's verifier statistics to the committed
// ledger (tests/ledger.json): a case per program and configuration, which
// fails on growth past the tolerance, headroom under the floor, or a
// program the ledger does not know on a kernel it does.
func checkLedger(t *testing.T, root string, kr *report.Kernel, progs []bpfload.ProgramStats) {
	l, err := verifier.Load(filepath.Join(root, "tests", "ledger.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range l.Check(kr.Kernel, kr.Release, progs) {
		c := report.Case{Kernel: kr.Kernel, Suite: "ledger", Case: f.Name(), Action: "pass"}
		if f.Fail {
			c.Action, c.Output = "fail", f.Msg
		}
		reportMu.Lock()
		kr.Cases = append(kr.Cases, c)
		reportMu.Unlock()
		t.Run(f.Name(), func(t *testing.T) {
			if f.Fail {
				t.Error(f.Msg)
			} else {
				t.Log(f.Msg)
			}
		})
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
// `-run Matrix/5.10/kv/TestXDPBasic` and failures read as usual.
func replay(t *testing.T, kr *report.Kernel, s suite, out []byte) {
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
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if root, _, sub := strings.Cut(e.Test, "/"); sub {
			// A subtest's output (its failure message) belongs to its
			// top-level case, which is what the matrix reports.
			if e.Action == "output" && outputs[root] != nil {
				outputs[root].WriteString(e.Output)
			}
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
		c := report.Case{Kernel: kr.Kernel, Suite: s.name, Case: name, Action: e.Action, Seconds: e.Elapsed, Output: outputs[name].String()}
		switch {
		case !done && s.bench != "" && binary == "pass":
			c.Action = "pass" // a benchmark has no verdict of its own
		case !done:
			c.Action = "fail" // the binary died or timed out mid-test
		}
		kept := c
		if kept.Action == "pass" {
			kept.Output = "" // the report keeps what explains a failure or skip
		}
		reportMu.Lock()
		kr.Cases = append(kr.Cases, kept)
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

// reportDir is -report, or results/ next to this file.
func reportDir() string {
	if *flagReport != "" {
		return *flagReport
	}
	return "results"
}

// kernelDone prints the kernel's last progress line.
func kernelDone(kr *report.Kernel, took time.Duration) {
	pass, fail, skip := kr.Counts()
	verdict := "passed"
	if why := kr.Failed(); why != "" {
		verdict = "FAILED (" + why + ")"
	}
	progressf("%s: %s in %.0fs: %d passed, %d failed, %d skipped", kr.Kernel, verdict, took.Seconds(), pass, fail, skip)
}

// tlog streams a guest's stderr and the fetcher's progress into the test log.
type tlog struct{ t *testing.T }

func (l tlog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
