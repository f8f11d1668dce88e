package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/xdplab/xdplab/kernels"
	"github.com/xdplab/xdplab/vmtest"
)

func init() {
	register(command{name: "vm run", summary: "boot a kernel and run one command in it: vm run --kernel 6.1 -- CMD...", run: vmRun})
	register(command{name: "vm exec", summary: "run a test binary in a kernel, for go test -exec 'lab vm exec --kernel 6.1'", run: vmExec})
	register(command{name: "vm shell", summary: "interactive shell in a kernel (virtme-ng), in the repository directory", run: vmShell})
	register(command{name: "vm accel", summary: "say whether VMs here run under KVM or TCG (emulation), and why", run: vmAccel})
	register(command{name: "vm bench", summary: "median boot+true+poweroff time per kernel", run: vmBench})
}

// dirList collects repeated -rodir/-rwdir flags (HOST or GUEST=HOST).
type dirList struct {
	rw   bool
	dirs *[]vmtest.Dir
}

func (d dirList) String() string { return "" }

func (d dirList) Set(s string) error {
	guest, host, ok := strings.Cut(s, "=")
	if !ok {
		guest, host = "", s
	}
	*d.dirs = append(*d.dirs, vmtest.Dir{Host: host, Guest: guest, RW: d.rw})
	return nil
}

type envList []string

func (e *envList) String() string { return strings.Join(*e, ",") }
func (e *envList) Set(s string) error {
	if !strings.Contains(s, "=") {
		return fmt.Errorf("-env wants KEY=VALUE, got %q", s)
	}
	*e = append(*e, s)
	return nil
}

type vmFlags struct {
	kernel  *string
	memory  *string
	cpus    *int
	timeout *time.Duration
	backend *string
	dirs    []vmtest.Dir
	env     envList
}

func addVMFlags(fs *flag.FlagSet, backendDefault string) *vmFlags {
	v := &vmFlags{
		kernel:  fs.String("kernel", "", "kernel to boot: "+kernelNames()+", or host (required)"),
		memory:  fs.String("memory", "1G", "guest memory"),
		cpus:    fs.Int("cpus", 1, "guest vCPUs"),
		timeout: fs.Duration("timeout", 10*time.Minute, "kill the VM after this long"),
		backend: fs.String("backend", backendDefault, "boot path: direct (fast, own init) or vng (virtme-ng)"),
	}
	fs.Var(dirList{rw: false, dirs: &v.dirs}, "rodir", "share a host directory read-only: PATH or GUEST=HOST (repeatable)")
	fs.Var(dirList{rw: true, dirs: &v.dirs}, "rwdir", "share a host directory read-write: PATH or GUEST=HOST (repeatable)")
	fs.Var(&v.env, "env", "KEY=VALUE for the guest command (repeatable)")
	return v
}

func kernelNames() string {
	m, err := kernels.Pinned()
	if err != nil {
		return "?"
	}
	return strings.Join(m.Names(), ", ")
}

func (v *vmFlags) options() vmtest.Options {
	return vmtest.Options{
		Backend: vmtest.Backend(*v.backend), Memory: *v.memory, CPUs: *v.cpus, Timeout: *v.timeout,
		Dirs: v.dirs, Env: v.env,
	}
}

// lookupCached finds the kernel and fetches it when it is not cached yet.
func lookupCached(name string) (*kernels.Kernel, error) {
	if name == "" {
		return nil, usageError{"--kernel is required (" + kernelNames() + ", or host)"}
	}
	k, err := kernels.Lookup(name)
	if err != nil {
		return nil, err
	}
	if !k.Cached() {
		ctx, cancel := signalContext()
		defer cancel()
		if err := k.Fetch(ctx, &kernels.Options{Log: os.Stderr}); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func vmRun(args []string) error {
	fs := newFlags("vm run")
	v := addVMFlags(fs, string(vmtest.Direct))
	results := fs.String("results", "", "host directory the guest can write to ($XDPLAB_RESULTS in the guest); default: a temporary one, kept only if written to")
	klog := fs.Bool("klog", false, "print the guest kernel log to stderr at the end")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		return usageError{"usage: lab vm run --kernel NAME [flags] -- CMD [ARG...]"}
	}
	k, err := lookupCached(*v.kernel)
	if err != nil {
		return err
	}
	o := v.options()
	o.Stdout, o.Stderr = os.Stdout, os.Stderr
	o.ResultsDir = *results
	tmpResults := false
	if o.ResultsDir == "" {
		d, err := os.MkdirTemp("", "lab-vm-results-")
		if err != nil {
			return err
		}
		o.ResultsDir, tmpResults = d, true
	} else if err := os.MkdirAll(o.ResultsDir, 0o755); err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	res, err := vmtest.Run(ctx, k, cmd, o)
	if tmpResults {
		if ents, _ := os.ReadDir(o.ResultsDir); len(ents) == 0 {
			os.Remove(o.ResultsDir)
		} else {
			fmt.Fprintf(os.Stderr, "lab vm run: results in %s\n", o.ResultsDir)
		}
	}
	if res != nil && *klog {
		fmt.Fprintf(os.Stderr, "---- guest kernel log (%s, %s) ----\n%s", res.Kernel, res.Accel, res.KernelLog)
	}
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return exitError{res.ExitCode}
	}
	return nil
}

// vmExec runs a program (a test binary, as go test -exec passes it) in a
// guest: in the current directory (the package's, so testdata is there),
// with its arguments and this process's environment as given, its stdout
// and stderr passed through as they come and its exit code returned. A
// guest that panics, oopses, WARNs or hangs fails the run with the guest's
// kernel log tail.
func vmExec(args []string) error {
	fs := newFlags("vm exec")
	v := addVMFlags(fs, string(vmtest.Direct))
	clean := fs.Bool("clean-env", false, "start the program with the guest's clean environment only (and -env), not this process's")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	prog := fs.Args()
	if len(prog) == 0 {
		return usageError{"usage: lab vm exec --kernel NAME [flags] PROGRAM [ARG...]  (as go test -exec 'lab vm exec --kernel 6.1')"}
	}
	k, err := lookupCached(*v.kernel)
	if err != nil {
		return err
	}
	o := v.options()
	if !*clean {
		// As a test binary run by go test inherits its environment (a
		// test's knobs, CI variables); the host's tree is the guest's, so
		// paths in it hold. -env comes last and wins.
		o.Env = append(os.Environ(), o.Env...)
	}
	if !flagSet(fs, "cpus") {
		o.CPUs = 2 // per-CPU maps and tests of concurrency want more than one
	}
	if !flagSet(fs, "timeout") {
		o.Timeout = execTimeout(prog[1:])
	}
	if o.Cwd, err = os.Getwd(); err != nil {
		return err
	}
	o.Stdout, o.Stderr = os.Stdout, os.Stderr
	ctx, cancel := signalContext()
	defer cancel()
	res, err := vmtest.Run(ctx, k, prog, o)
	if err != nil {
		if res != nil && res.KernelLog != "" {
			fmt.Fprintf(os.Stderr, "---- guest kernel log, last lines (%s, %s) ----\n%s\n", res.Kernel, res.Accel, res.KernelLogTail(30))
		}
		return err
	}
	if res.ExitCode != 0 {
		return exitError{res.ExitCode}
	}
	return nil
}

// execTimeout gives the guest the test binary's own -test.timeout (go test
// passes one, 10m by default) plus room to boot, so the test's timeout
// fires first and reports which test hung.
func execTimeout(args []string) time.Duration {
	t := 10 * time.Minute
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "-test.timeout=")
		if !ok && a == "-test.timeout" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if d, err := time.ParseDuration(v); ok && err == nil {
			if d == 0 {
				return 24 * time.Hour // go test's "no timeout"
			}
			t = d
		}
	}
	return t + 3*time.Minute
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func vmShell(args []string) error {
	fs := newFlags("vm shell")
	v := addVMFlags(fs, string(vmtest.VNG))
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	k, err := lookupCached(*v.kernel)
	if err != nil {
		return err
	}
	if k.IsHost() {
		return usageError{"lab vm shell: host is the running kernel; just use your shell"}
	}
	o := v.options()
	if repo, err := findRepoFile("go.mod"); err == nil {
		o.Cwd = strings.TrimSuffix(repo, "/go.mod")
	}
	cmd, err := vmtest.ShellCommand(k, o)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	fmt.Fprintf(os.Stderr, "lab vm shell: booting %s (%s) with virtme-ng; exit the shell to power off\n", k.Name, k.Release)
	if err := cmd.Run(); err != nil {
		var ee interface{ ExitCode() int }
		if errors.As(err, &ee) {
			return exitError{ee.ExitCode()}
		}
		return err
	}
	return nil
}

func vmBench(args []string) error {
	fs := newFlags("vm bench")
	v := addVMFlags(fs, string(vmtest.Direct))
	n := fs.Int("n", 5, "boots per kernel")
	sweep := fs.Bool("sweep", false, "also time a `uname -r` boot of every kernel at once (up to one VM per core)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	names := fs.Args()
	if *v.kernel != "" {
		names = append(names, *v.kernel)
	}
	if len(names) == 0 {
		m, err := kernels.Pinned()
		if err != nil {
			return err
		}
		names = m.Names()
	}
	ctx, cancel := signalContext()
	defer cancel()
	fmt.Printf("%-6s %-8s %-5s %8s %8s %8s\n", "KERNEL", "BACKEND", "ACCEL", "MEDIAN", "MIN", "MAX")
	for _, name := range names {
		k, err := lookupCached(name)
		if err != nil {
			return err
		}
		var ds []time.Duration
		accel := ""
		for i := 0; i < *n; i++ {
			o := v.options()
			res, err := vmtest.Run(ctx, k, []string{"true"}, o)
			if err != nil {
				return fmt.Errorf("%s boot %d: %w", name, i+1, err)
			}
			accel = res.Accel
			// Duration leaves out any wait for a free VM slot (other users).
			ds = append(ds, res.Duration)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Printf("%-6s %-8s %-5s %7.1fs %7.1fs %7.1fs\n", name, *v.backend, accel,
			ds[len(ds)/2].Seconds(), ds[0].Seconds(), ds[len(ds)-1].Seconds())
	}
	if *sweep {
		return benchSweep(ctx, names, v)
	}
	return nil
}

// benchSweep boots all kernels concurrently (vmtest's slots keep it to one
// VM per core) and checks each `uname -r`.
func benchSweep(ctx context.Context, names []string, v *vmFlags) error {
	start := time.Now()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		k, err := lookupCached(name)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := vmtest.Run(ctx, k, []string{"uname -r"}, v.options())
			if err == nil && strings.TrimSpace(string(res.Stdout)) != k.Release {
				err = fmt.Errorf("%s: uname -r = %q, pinned %q", name, res.Stdout, k.Release)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("sweep: uname -r on %s in %.1fs (%d VMs at a time)\n", strings.Join(names, ", "), time.Since(start).Seconds(), vmtest.Slots())
	return nil
}

func vmAccel(args []string) error {
	fs := newFlags("vm accel")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	acc, why := vmtest.Accel()
	fmt.Printf("%s: %s\n", acc, why)
	return nil
}
