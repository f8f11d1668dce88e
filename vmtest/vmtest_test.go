package vmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/kernels"
)

func TestScanKernelLog(t *testing.T) {
	log := "[ 1.0] ok\n[ 2.0] sysrq: Trigger a crash\n[ 2.1] Kernel panic - not syncing: sysrq triggered crash\n[ 2.2] CPU: 0 PID: 1\n"
	lines, kind := scanKernelLog(log, false)
	if kind != ErrPanic || !strings.Contains(strings.Join(lines, "\n"), "sysrq triggered crash") {
		t.Errorf("panic: kind %v, lines %q", kind, lines)
	}
	warn := "[ 1.0] ok\n[ 3.0] WARNING: CPU: 0 PID: 7 at net/core/dev.c:1 foo+0x1\n[ 3.1] Call Trace:\n"
	if _, kind := scanKernelLog(warn, false); kind != ErrKernelBug {
		t.Errorf("WARNING: kind %v", kind)
	}
	if _, kind := scanKernelLog(warn, true); kind != nil {
		t.Errorf("allowed WARNING: kind %v", kind)
	}
	if _, kind := scanKernelLog("[ 1.0] BUG: kernel NULL pointer dereference\n", false); kind != ErrKernelBug {
		t.Errorf("BUG: kind %v", kind)
	}
	if _, kind := scanKernelLog("[ 1.0] all fine\n", false); kind != nil {
		t.Errorf("clean log: kind %v", kind)
	}
}

func TestShellJoin(t *testing.T) {
	if got := shellJoin([]string{"echo", "a b", "it's"}); got != `'echo' 'a b' 'it'\''s'` {
		t.Error(got)
	}
	if got := shellJoin([]string{"exit 3"}); got != "exit 3" {
		t.Error(got)
	}
}

func TestHostKernel(t *testing.T) {
	res, err := Run(context.Background(), kernels.Host(), []string{`echo out; echo err >&2; echo r > "$XDPLAB_RESULTS/f"; exit 3`},
		Options{ResultsDir: t.TempDir(), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(res.ResultsDir, "f")); string(b) != "r\n" {
		t.Errorf("results file: %q", b)
	}
}

// vmKernels skips VM tests where they cannot or should not run, and fetches
// the pinned kernels (downloaded by the run itself on a fresh machine).
func vmKernels(t *testing.T) []*kernels.Kernel {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping VM boots (seconds each under emulation; run without -short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("VM tests share the host root file system with the guest and need root")
	}
	if err := checkTools(Direct); err != nil {
		t.Fatal(err)
	}
	m, err := kernels.Pinned()
	if err != nil {
		t.Fatal(err)
	}
	// $XDPLAB_KERNELS narrows the kernels, as CI's one job per kernel does.
	sel, err := m.Select(os.Getenv("XDPLAB_KERNELS"))
	if err != nil {
		t.Fatalf("XDPLAB_KERNELS: %v", err)
	}
	var ks []*kernels.Kernel
	for _, k := range sel {
		if !k.IsHost() {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		t.Skipf("XDPLAB_KERNELS=%s selects no pinned kernel to boot", os.Getenv("XDPLAB_KERNELS"))
	}
	fetchOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for _, k := range ks {
			if err := k.Fetch(ctx, &kernels.Options{Log: os.Stderr}); err != nil {
				fetchErr = err
				return
			}
		}
	})
	if fetchErr != nil {
		t.Fatal(fetchErr)
	}
	return ks
}

var (
	fetchOnce sync.Once
	fetchErr  error
)

type tlog struct {
	t      *testing.T
	prefix string
}

func (l tlog) Write(b []byte) (int, error) {
	l.t.Log(l.prefix + strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func opts(t *testing.T, b Backend) Options {
	return Options{
		Backend: b, Timeout: 4 * time.Minute, ResultsDir: t.TempDir(),
		Stdout: tlog{t, "guest stdout: "}, Stderr: tlog{t, "guest stderr: "},
	}
}

// assertGone checks that nothing of the run's process group survives.
func assertGone(t *testing.T, res *Result) {
	t.Helper()
	if res == nil || res.PID == 0 {
		t.Fatal("no process recorded")
	}
	if groupAlive(res.PID) {
		t.Errorf("a process of the VM's group (%d) survived the run", res.PID)
	}
}

func buildXDPAttach(t *testing.T) string {
	t.Helper()
	xdpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xdplab-vmtest-bin-")
		if err != nil {
			xdpErr = err
			return
		}
		xdpDir = dir
		bin := filepath.Join(dir, "xdpattach")
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/xdpattach")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			xdpErr = fmt.Errorf("building xdpattach: %v: %s", err, out)
			return
		}
		xdpBin = bin
	})
	if xdpErr != nil {
		t.Fatal(xdpErr)
	}
	return xdpBin
}

var (
	xdpOnce        sync.Once
	xdpBin, xdpDir string
	xdpErr         error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if xdpDir != "" {
		os.RemoveAll(xdpDir)
	}
	// Every run removes its own temporary directory; check none is left.
	tempDirs.Range(func(k, _ any) bool {
		if _, err := os.Stat(k.(string)); err == nil {
			fmt.Fprintf(os.Stderr, "FAIL: temporary directory left behind: %s\n", k)
			code = 1
		}
		return true
	})
	os.Exit(code)
}

// TestDirect boots every pinned kernel with the direct path and checks the
// whole contract. One boot carries several independent checks (each with
// its own assertion) to keep the number of boots down under emulation.
func TestDirect(t *testing.T) {
	ks := vmKernels(t)
	xdp := buildXDPAttach(t)
	for _, k := range ks {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			var boot time.Duration
			t.Run("main", func(t *testing.T) { boot = checkMain(t, k, Direct, xdp) })
			t.Run("contract", func(t *testing.T) { checkContract(t, k, Direct) })
			t.Run("exit0", func(t *testing.T) { checkExit(t, k, Direct, 0) })
			t.Run("exit255", func(t *testing.T) { checkExit(t, k, Direct, 255) })
			t.Run("panic", func(t *testing.T) { checkPanic(t, k, Direct) })
			t.Run("timeout", func(t *testing.T) { checkTimeout(t, k, Direct, boot) })
		})
	}
}

// TestVNG covers virtme-ng, the reference path, on every kernel: one boot
// each for the main checks, plus 255 and panic on one kernel (vng's own
// code for a dead guest is 255 too, so that case matters most here).
func TestVNG(t *testing.T) {
	ks := vmKernels(t)
	if err := checkTools(VNG); err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			t.Run("main", func(t *testing.T) { checkMain(t, k, VNG, "") })
			t.Run("contract", func(t *testing.T) { checkContract(t, k, VNG) })
			if k.Name == "6.1" {
				t.Run("exit255", func(t *testing.T) { checkExit(t, k, VNG, 255) })
				t.Run("panic", func(t *testing.T) { checkPanic(t, k, VNG) })
			}
		})
	}
}

// checkMain returns how long the run took, to size the timeout test.
func checkMain(t *testing.T, k *kernels.Kernel, b Backend, xdp string) time.Duration {
	o := opts(t, b)
	// A command and environment longer than x86's 2048-byte kernel
	// command line: vng put its script there, and the kernel cut it off
	// (and our console and init= after it): the guest idled until the
	// timeout.
	long := strings.Repeat("x", 4096)
	o.Env = []string{"XDPLAB_TEST_VAR=hello world", "XDPLAB_TEST_LONG=" + long}
	script := `uname -r; echo "var=$XDPLAB_TEST_VAR"; echo "long=${#XDPLAB_TEST_LONG}"; echo to-stderr >&2; echo written-in-guest > "$XDPLAB_RESULTS/out.txt"; cp /bin/true "$XDPLAB_RESULTS/suid" && chmod 4755 "$XDPLAB_RESULTS/suid"; : ` + long
	if xdp != "" {
		script += "; " + xdp + " || echo xdpattach-failed"
	}
	script += "; exit 3"
	res, err := Run(context.Background(), k, []string{script}, o)
	if err != nil {
		t.Fatalf("%s: %v", k.Name, err)
		return 0
	}
	t.Logf("%s %s: %.1fs (%s: %s)", k.Name, b, res.Duration.Seconds(), res.Accel, res.AccelWhy)
	out := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	if out[0] != k.Release {
		t.Errorf("uname -r = %q, pinned %q", out[0], k.Release)
	}
	if res.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", res.ExitCode)
	}
	if !strings.Contains(string(res.Stdout), "var=hello world\n") || !strings.Contains(string(res.Stdout), "long=4096\n") {
		t.Errorf("environment not passed: stdout %q", res.Stdout)
	}
	if strings.TrimSpace(string(res.Stderr)) != "to-stderr" || strings.Contains(string(res.Stdout), "to-stderr") {
		t.Errorf("stdout/stderr mixed: stdout %q, stderr %q", res.Stdout, res.Stderr)
	}
	if b, err := os.ReadFile(filepath.Join(o.ResultsDir, "out.txt")); err != nil || string(b) != "written-in-guest\n" {
		t.Errorf("results file: %q, %v", b, err)
	}
	// A guest's root must not make set-uid files in a host directory.
	if fi, err := os.Stat(filepath.Join(o.ResultsDir, "suid")); err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		t.Errorf("a file the guest made set-uid root in the results directory: %v %v, want it there without set-uid", fi.Mode(), err)
	}
	if xdp != "" {
		if n := strings.Count(string(res.Stdout), "xdp attached:"); n != 2 || strings.Contains(string(res.Stdout), "xdpattach-failed") {
			t.Errorf("XDP attach on veth pair failed: stdout %q, stderr %q", res.Stdout, res.Stderr)
		}
	}
	if res.KernelLog == "" {
		t.Error("no kernel log")
	}
	assertGone(t, res)
	return res.Duration
}

// contractItems are the guest contract's items (package doc) that
// testdata/contract.sh checks, each of which must report.
var contractItems = []string{"bpffs", "tracefs", "debugfs", "cgroup2", "devshm", "kconfig", "modules", "userns", "tmp", "loopback", "devfd", "hostfs", "varlog"}

// checkContract runs testdata/contract.sh in the guest: every item of the
// guest contract, a subtest each.
func checkContract(t *testing.T, k *kernels.Kernel, b Backend) {
	script, err := filepath.Abs(filepath.Join("testdata", "contract.sh"))
	if err != nil {
		t.Fatal(err)
	}
	o := opts(t, b)
	var logDirs []string
	for _, d := range hostLogDirs() {
		logDirs = append(logDirs, d.name)
	}
	o.Env = append(o.Env, "XDPLAB_HOST_LOG_DIRS="+strings.Join(logDirs, " "))
	res, err := Run(context.Background(), k, []string{"sh", script}, o)
	if err != nil {
		t.Fatalf("%s: %v", k.Name, err)
	}
	if res.ExitCode != 0 {
		t.Errorf("contract.sh exited %d; stderr %q", res.ExitCode, res.Stderr)
	}
	got := map[string]string{}
	for _, l := range strings.Split(string(res.Stdout), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			got[f[1]] = l
		}
	}
	for _, item := range contractItems {
		t.Run(item, func(t *testing.T) {
			switch l := got[item]; {
			case l == "":
				t.Errorf("no result for %s: stdout %q, stderr %q", item, res.Stdout, res.Stderr)
			case !strings.HasPrefix(l, "ok "):
				t.Error(l)
			default:
				t.Log(l)
			}
		})
	}
	assertGone(t, res)
}

func checkExit(t *testing.T, k *kernels.Kernel, b Backend, code int) {
	res, err := Run(context.Background(), k, []string{fmt.Sprintf("exit %d", code)}, opts(t, b))
	if err != nil {
		t.Fatalf("%s: %v", k.Name, err)
	}
	if res.ExitCode != code {
		t.Errorf("exit code %d, want %d", res.ExitCode, code)
	}
	assertGone(t, res)
}

func checkPanic(t *testing.T, k *kernels.Kernel, b Backend) {
	res, err := Run(context.Background(), k, []string{"echo c > /proc/sysrq-trigger; sleep 30"}, opts(t, b))
	if !errors.Is(err, ErrPanic) {
		t.Fatalf("want a panic error, got %v", err)
	}
	var ge *GuestError
	if !errors.As(err, &ge) || !strings.Contains(strings.Join(ge.Lines, "\n"), "Kernel panic") {
		t.Errorf("panic error without the panic lines: %v", err)
	}
	t.Logf("reported as: %v", firstLines(err.Error(), 4))
	assertGone(t, res)
}

func checkTimeout(t *testing.T, k *kernels.Kernel, b Backend, boot time.Duration) {
	o := opts(t, b)
	// The sleep must start before the timeout hits: give the boot room in
	// proportion to how long this kernel's first boot took (CI machines run
	// other suites alongside), yet keep it cheap on a quiet machine.
	o.Timeout = 25*time.Second + 3*boot
	t.Logf("timeout %s", o.Timeout)
	res, err := Run(context.Background(), k, []string{"echo sleeping; sleep 600"}, o)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("want a timeout, got %v", err)
	}
	// Measured by Run from when it got a VM slot: waiting for one (other
	// suites boot VMs too) is not the timeout's doing.
	if res.Duration > o.Timeout+15*time.Second {
		t.Errorf("timeout took %s to take effect", res.Duration)
	}
	if !strings.Contains(string(res.Stdout), "sleeping") {
		t.Errorf("command never started, so the timeout hit the boot instead: stdout %q", res.Stdout)
	}
	assertGone(t, res)
}

func firstLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// BenchmarkBoot measures boot + `true` + power-off per kernel and backend;
// it reports the median. Run with -benchtime=5x for the figure:
//
//	go test -run '^$' -bench Boot -benchtime 5x ./vmtest
func BenchmarkBoot(b *testing.B) {
	if testing.Short() {
		b.Skip("-short: no VM boots")
	}
	m, err := kernels.Pinned()
	if err != nil {
		b.Fatal(err)
	}
	for _, backend := range []Backend{Direct, VNG} {
		for _, name := range m.Names() {
			k, _ := m.Lookup(name)
			b.Run(name+"/"+string(backend), func(b *testing.B) {
				if err := k.Fetch(context.Background(), nil); err != nil {
					b.Fatal(err)
				}
				var ds []time.Duration
				for i := 0; i < b.N; i++ {
					res, err := Run(context.Background(), k, []string{"true"}, Options{Backend: backend, Timeout: 5 * time.Minute})
					if err != nil {
						b.Fatal(err)
					}
					ds = append(ds, res.Duration) // without waits for a VM slot
				}
				sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
				b.ReportMetric(ds[len(ds)/2].Seconds(), "s/boot-median")
			})
		}
	}
}

// TestSlotDirRefusesPlanted holds the VM slots to a directory of the user's
// own: one planted as a symlink, one others can write into and one owned
// by another user are refused with a message naming it, and a fresh one is
// created private.
func TestSlotDirRefusesPlanted(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{link: "symlink", open: "writable by others"}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		if err := os.Mkdir(other, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cases[other] = "owned by uid 65534"
	}
	for dir, want := range cases {
		t.Setenv("XDPLAB_VM_SLOT_DIR", dir)
		release, err := acquireSlot(t.Context())
		if err == nil {
			release()
			t.Errorf("slots in %s: taken, want refused (%s)", dir, want)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
			t.Errorf("slots in %s: %v, want an error naming it and %q", dir, err, want)
		}
	}
	fresh := filepath.Join(base, "fresh", "slots")
	t.Setenv("XDPLAB_VM_SLOT_DIR", fresh)
	release, err := acquireSlot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	release()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("fresh slot directory: %v %v, want mode 0700", fi.Mode(), err)
	}
}
