// Package vmtest boots a cached kernel over the host's root file system,
// runs one command in it and brings back its exit code, stdout, stderr, a
// results directory and the guest's kernel log.
//
// Two boot paths sit behind one API: virtme-ng (vng), the reference, and
// Direct, QEMU with a tiny Go init of our own, which skips vng's bash init
// and udev and boots several times faster under emulation (TCG).
//
// # The guest contract
//
// A command started in a guest, on either backend and every pinned kernel,
// finds what a BPF test finds on a Debian machine (testdata/contract.sh
// checks each item on each kernel and backend):
//
//   - bpffs at /sys/fs/bpf, tracefs at /sys/kernel/tracing, debugfs at
//     /sys/kernel/debug, cgroup2 at /sys/fs/cgroup;
//   - the guest kernel's config at /boot/config-$(uname -r), as Debian
//     installs it, and its modules under /lib/modules for modprobe;
//   - user namespaces as on a normal boot: the command's root is its mount
//     namespace's root (no chroot), so a child may unshare user, mount and
//     PID namespaces and mount its own /proc;
//   - /dev/shm (tmpfs), /dev/fd and /dev/std*, a writable /tmp, loopback up;
//   - the host's tree read-only at the same paths, writes going to a
//     throwaway overlay; the host's /var/log directories, writable (services
//     open their logs there); Options.ResultsDir writable at its host path,
//     the guest's owners and modes kept off the host's files;
//   - root, a clean environment (PATH, HOME=/root, LANG, XDPLAB_RESULTS and
//     Options.Env), the working directory Options.Cwd.
package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xdplab/xdplab/kernels"
	"golang.org/x/sys/unix"
)

// Backend selects the boot path.
type Backend string

const (
	// Direct is QEMU with vmtest's own init: fastest, for tests.
	Direct Backend = "direct"
	// VNG is virtme-ng: the reference path, and what interactive shells use.
	VNG Backend = "vng"
)

// Dir shares a host directory with the guest.
type Dir struct {
	Host  string // directory on the host
	Guest string // where the guest sees it; default: the same path
	RW    bool   // writable by the guest (else read-only)
}

// Options tune a run. The zero value is usable.
type Options struct {
	Backend Backend       // default Direct
	Memory  string        // QEMU -m syntax; default "1G"
	CPUs    int           // default 1
	Timeout time.Duration // whole run, boot included; default 5m
	// ResultsDir is a host directory the guest may write into, at the same
	// path, also named by $XDPLAB_RESULTS in the guest. Empty: none.
	ResultsDir string
	Dirs       []Dir
	Env        []string // extra KEY=VALUE for the command
	Cwd        string   // guest working directory; default the current one
	// Stdout and Stderr get the guest command's output as it comes (it is
	// also kept in Result), one whole line per Write (the last may lack
	// its newline, as the command wrote it).
	Stdout io.Writer
	Stderr io.Writer
	// AllowWarnings keeps kernel WARNING: lines from failing the run.
	AllowWarnings bool
	// Booting, if set, is called once the run holds a VM slot, just
	// before the VM starts: waiting for a slot is not booting.
	Booting func()
	// VNGFullUdev gives a vng guest the host's whole udev rule set and
	// tmpfiles.d (as lab vm shell has) instead of the one rule runs need.
	VNGFullUdev bool
	// KVM forces the accelerator: "" decides automatically, "kvm" or "tcg".
	KVM string
}

// Result is what a run brings back.
type Result struct {
	ExitCode   int
	Stdout     []byte
	Stderr     []byte
	KernelLog  string
	ResultsDir string
	Accel      string // "kvm" or "tcg"
	AccelWhy   string
	Backend    Backend
	Kernel     string // the release booted
	Duration   time.Duration
	// PID of the QEMU (direct) or vng process; it led a process group that
	// is gone when Run returns.
	PID int
}

// KernelLogTail is the last n lines of the guest's kernel log: what to show
// with a failure.
func (r *Result) KernelLogTail(n int) string {
	return strings.Join(lastN(strings.Split(strings.TrimRight(r.KernelLog, "\n"), "\n"), n), "\n")
}

// Failure kinds, matched with errors.Is.
var (
	ErrPanic       = errors.New("guest kernel panic")
	ErrKernelBug   = errors.New("guest kernel oops/BUG/WARNING")
	ErrTimeout     = errors.New("guest timed out")
	ErrNoExit      = errors.New("guest ended without reporting an exit code")
	ErrMissingTool = errors.New("missing tool")
	ErrNotCached   = errors.New("kernel not cached")
)

// GuestError is a failed run: the kind, a summary, and the kernel log lines
// that show it.
type GuestError struct {
	Kind  error
	Msg   string
	Lines []string
}

func (e *GuestError) Error() string {
	s := e.Kind.Error()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if len(e.Lines) > 0 {
		s += "\n\t" + strings.Join(e.Lines, "\n\t")
	}
	return s
}

func (e *GuestError) Unwrap() error { return e.Kind }

// Run boots k (which must be cached: see kernels.Kernel.Fetch) and runs
// args in it. A non-zero exit of the command is not an error; a panic,
// oops, kernel warning, timeout or missing exit code is. The Result is
// returned also with an error, as far as it got.
func Run(ctx context.Context, k *kernels.Kernel, args []string, o Options) (*Result, error) {
	if len(args) == 0 {
		return nil, errors.New("vmtest: no command")
	}
	o.defaults()
	res := &Result{Backend: o.Backend, Kernel: k.Release, ResultsDir: o.ResultsDir}
	if k.IsHost() {
		return runHost(ctx, args, o, res)
	}
	if !k.Cached() {
		return nil, fmt.Errorf("%w: %s (%s); run 'lab kernels fetch %s'", ErrNotCached, k.Name, k.Release, k.Name)
	}
	if err := checkTools(o.Backend); err != nil {
		return nil, err
	}
	res.Accel, res.AccelWhy = accel(o.KVM)

	release, err := acquireSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if o.Booting != nil {
		o.Booting()
	}

	sweepStale()
	tmp, err := os.MkdirTemp("", "xdplab-vm-")
	if err != nil {
		return nil, err
	}
	tempDirs.Store(tmp, true)
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	var cmd *exec.Cmd
	var l *launch
	switch o.Backend {
	case Direct:
		l, err = directCommand(k, args, o, tmp, res.Accel)
	case VNG:
		l, err = vngCommand(k, args, o, tmp, res.Accel)
	default:
		err = fmt.Errorf("vmtest: unknown backend %q", o.Backend)
	}
	if err != nil {
		return nil, err
	}
	cmd = l.cmd
	runErr := supervise(ctx, cmd, l, o, res)
	res.Duration = time.Since(start)
	res.KernelLog = l.klog.String()
	code, haveCode := l.exitCode()
	res.ExitCode = code

	if lines, kind := scanKernelLog(res.KernelLog, o.AllowWarnings); kind != nil {
		return res, &GuestError{Kind: kind, Msg: fmt.Sprintf("kernel %s, %s", k.Release, o.Backend), Lines: lines}
	}
	if errors.Is(runErr, ErrTimeout) {
		return res, &GuestError{Kind: ErrTimeout, Msg: fmt.Sprintf("after %s (kernel %s, %s, %s); the QEMU process tree was killed", o.Timeout, k.Release, o.Backend, res.Accel),
			Lines: lastN(strings.Split(strings.TrimSpace(res.KernelLog), "\n"), 10)}
	}
	if runErr != nil {
		return res, runErr
	}
	if !haveCode {
		return res, &GuestError{Kind: ErrNoExit, Msg: fmt.Sprintf("kernel %s, %s; last kernel log lines", k.Release, o.Backend),
			Lines: lastN(strings.Split(strings.TrimSpace(res.KernelLog), "\n"), 15)}
	}
	return res, nil
}

func (o *Options) defaults() {
	if o.Backend == "" {
		o.Backend = Direct
	}
	if o.Memory == "" {
		o.Memory = "1G"
	}
	if o.CPUs == 0 {
		o.CPUs = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Cwd == "" {
		o.Cwd, _ = os.Getwd()
	}
}

// launch is a prepared QEMU (or vng) command and where its outputs go.
type launch struct {
	cmd      *exec.Cmd
	stdout   io.Reader // nil when the command's own stdout is used
	stderr   io.Reader
	klog     *syncBuffer
	klogR    io.Reader // read into klog while running, or
	klogFile string    // read into klog at the end
	retPath  string    // file the guest writes its exit code into
	closeFDs []*os.File
}

// exitMarker prefixes the exit status a vng guest writes to /dev/kmsg.
const exitMarker = "xdplab-exit: "

func (l *launch) exitCode() (int, bool) {
	var s string
	if l.retPath != "" {
		b, err := os.ReadFile(l.retPath)
		if err != nil {
			return -1, false
		}
		s = string(b)
	} else {
		log := l.klog.String()
		i := strings.LastIndex(log, exitMarker)
		if i < 0 {
			return -1, false
		}
		s, _, _ = strings.Cut(log[i+len(exitMarker):], "\n")
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return -1, false
	}
	return n, true
}

// supervise starts cmd in its own process group, streams its outputs and
// kills the whole group on timeout or cancellation, waiting until every
// member is gone.
func supervise(ctx context.Context, cmd *exec.Cmd, l *launch, o Options, res *Result) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var outBuf, errBuf, qemuMsgs syncBuffer
	var wg sync.WaitGroup
	pump := func(r io.Reader, keep *syncBuffer, w io.Writer) {
		defer wg.Done()
		dst := io.Writer(keep)
		var lines *lw
		if w != nil {
			lines = &lw{w: w}
			dst = io.MultiWriter(keep, lines)
		}
		io.Copy(dst, r)
		if lines != nil && len(lines.buf) > 0 {
			w.Write(lines.buf) // a last line without its newline, as it came
		}
	}
	// Our own pipes, not cmd.StdoutPipe: Wait closes those as soon as the
	// process exits, and output not yet read is lost (seen: a host run's
	// stdout and stderr came back empty).
	if l.stdout == nil {
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		cmd.Stdout, l.stdout = pw, pr
		l.closeFDs = append(l.closeFDs, pw)
		defer pr.Close()
	}
	if l.stderr == nil {
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		cmd.Stderr, l.stderr = pw, pr
		l.closeFDs = append(l.closeFDs, pw)
		defer pr.Close()
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	// Our copies of the pipes' write ends must close, or reads never end.
	for _, f := range l.closeFDs {
		f.Close()
	}
	pgid := cmd.Process.Pid
	res.PID = pgid
	wg.Add(2)
	go pump(l.stdout, &outBuf, o.Stdout)
	if o.Backend == VNG {
		// QEMU under vng shares the guest's stderr; its own warnings go to
		// the kernel log instead, to keep the command's stderr exact.
		pr, pw := io.Pipe()
		go func() {
			// Line by line, each as it came: a last line without its
			// newline stays without one.
			r := bufio.NewReaderSize(l.stderr, 64<<10)
			for {
				line, err := r.ReadString('\n')
				if strings.HasPrefix(line, "qemu-system-x86_64: ") {
					qemuMsgs.Write([]byte(line))
				} else if line != "" {
					pw.Write([]byte(line))
				}
				if err != nil {
					break
				}
			}
			pw.Close()
		}()
		go pump(pr, &errBuf, o.Stderr)
	} else {
		go pump(l.stderr, &errBuf, o.Stderr)
	}
	if l.klogR != nil {
		wg.Add(1)
		go pump(l.klogR, l.klog, nil)
	}

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var runErr error
	select {
	case err := <-done:
		if err != nil && o.Backend == Direct {
			if _, ok := err.(*exec.ExitError); !ok {
				runErr = err
			}
		}
	case <-ctx.Done():
		killGroup(pgid)
		<-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			runErr = ErrTimeout
		} else {
			runErr = ctx.Err()
		}
	}
	// vng forks QEMU: make sure nothing of the group outlives the run.
	killGroup(pgid)
	waitGroupGone(pgid, 10*time.Second)
	wg.Wait()
	if l.klogFile != "" {
		if b, err := os.ReadFile(l.klogFile); err == nil {
			l.klog.Write(b)
		}
	}
	l.klog.Write(qemuMsgs.Bytes())
	res.Stdout, res.Stderr = outBuf.Bytes(), errBuf.Bytes()
	return runErr
}

func killGroup(pgid int) { syscall.Kill(-pgid, syscall.SIGKILL) }

func waitGroupGone(pgid int, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) && groupAlive(pgid) {
		time.Sleep(20 * time.Millisecond)
	}
}

// groupAlive reports whether a process group has a member that is not a
// zombie (orphans are reaped by PID 1 whenever it gets to it).
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// scanKernelLog finds a panic, oops, BUG or WARNING and returns the lines
// around it.
func scanKernelLog(log string, allowWarnings bool) ([]string, error) {
	lines := strings.Split(log, "\n")
	type pat struct {
		s    string
		kind error
	}
	pats := []pat{
		{"Kernel panic - not syncing", ErrPanic},
		{"Oops:", ErrKernelBug},
		{"BUG:", ErrKernelBug},
		{"general protection fault", ErrKernelBug},
		{"Unable to handle kernel", ErrKernelBug},
	}
	if !allowWarnings {
		pats = append(pats, pat{"WARNING:", ErrKernelBug})
	}
	// A panic wins over what led to it; report from the first problem line.
	first, kind := -1, error(nil)
	for i, l := range lines {
		for _, p := range pats {
			if strings.Contains(l, p.s) {
				if first < 0 {
					first = i
				}
				if kind == nil || p.kind == ErrPanic {
					kind = p.kind
				}
			}
		}
	}
	if kind == nil {
		return nil, nil
	}
	from := max(first-3, 0)
	to := min(first+25, len(lines))
	if kind == ErrPanic {
		// Make sure the panic line itself is in what we show.
		for i := first; i < len(lines); i++ {
			if strings.Contains(lines[i], "Kernel panic") && i >= to {
				to = min(i+1, len(lines))
			}
		}
	}
	var out []string
	for _, l := range lines[from:to] {
		out = append(out, strings.TrimRight(l, "\r"))
	}
	return out, kind
}

func lastN(l []string, n int) []string {
	if len(l) > n {
		return l[len(l)-n:]
	}
	return l
}

// runHost runs the command on the running kernel, for the fast inner loop.
func runHost(ctx context.Context, args []string, o Options, res *Result) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	res.Accel, res.AccelWhy = "none", "host kernel, no VM"
	cmd := exec.Command("/bin/sh", "-c", shellJoin(args))
	cmd.Dir = o.Cwd
	cmd.Env = append(os.Environ(), o.Env...)
	if o.ResultsDir != "" {
		cmd.Env = append(cmd.Env, "XDPLAB_RESULTS="+o.ResultsDir)
	}
	cmd.Stdin = nil
	l := &launch{klog: &syncBuffer{}}
	start := time.Now()
	err := supervise(ctx, cmd, l, Options{Backend: Direct, Stdout: o.Stdout, Stderr: o.Stderr}, res)
	res.Duration = time.Since(start)
	if errors.Is(err, ErrTimeout) {
		return res, &GuestError{Kind: ErrTimeout, Msg: fmt.Sprintf("after %s on the host kernel; the process group was killed", o.Timeout)}
	}
	res.ExitCode = cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.ExitCode = 128 + int(ws.Signal())
	}
	return res, err
}

// shellJoin quotes args for /bin/sh -c.
func shellJoin(args []string) string {
	if len(args) == 1 {
		return args[0] // one argument is a shell command line already
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// checkTools fails fast, naming the command that installs what is missing.
func checkTools(b Backend) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: vmtest shares the host's root file system with the guest and needs root; run as root (sudo)", ErrMissingTool)
	}
	need := map[string]string{"qemu-system-x86_64": "qemu-system-x86"}
	if b == VNG {
		need["vng"] = "virtme-ng"
		need["busybox"] = "busybox-static"
		need["udevadm"] = "udev"
	} else {
		need["go"] = "" // builds the guest init
	}
	for tool, pkg := range need {
		if _, err := exec.LookPath(tool); err != nil {
			if pkg == "" {
				return fmt.Errorf("%w: %s (the direct boot path builds its guest init with Go; put go on PATH or use the vng backend)", ErrMissingTool, tool)
			}
			return fmt.Errorf("%w: %s (package %s); run 'make deps' as root", ErrMissingTool, tool, pkg)
		}
	}
	return nil
}

// Accel says which accelerator a run would use now ("kvm" or "tcg") and
// why, the way Run decides it (XDPLAB_KVM, /dev/kvm, the CPU's flags).
func Accel() (string, string) { return accel("") }

// accel decides between KVM and TCG. /dev/kvm can exist and even create
// VMs where the CPU has no virtualisation extensions exposed (nested setups
// without VMX): guests then hang early in boot, so the CPU flags decide too.
func accel(force string) (string, string) {
	switch force {
	case "kvm", "tcg":
		return force, "forced"
	}
	switch os.Getenv("XDPLAB_KVM") {
	case "0":
		return "tcg", "XDPLAB_KVM=0"
	case "1":
		return "kvm", "XDPLAB_KVM=1"
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", "no usable /dev/kvm: " + err.Error()
	}
	defer f.Close()
	vm, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), 0xAE01 /* KVM_CREATE_VM */, 0)
	if e != 0 {
		return "tcg", "KVM_CREATE_VM failed: " + e.Error()
	}
	syscall.Close(int(vm))
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "flags") {
			for _, fl := range strings.Fields(l) {
				if fl == "vmx" || fl == "svm" {
					return "kvm", "/dev/kvm usable, CPU has " + fl
				}
			}
			break
		}
	}
	return "tcg", "/dev/kvm opens but the CPU shows no vmx/svm (guests hang under it)"
}

// Slots returns how many VMs may run at once on this machine: one per core,
// or $XDPLAB_VM_SLOTS.
func Slots() int {
	if n, err := strconv.Atoi(os.Getenv("XDPLAB_VM_SLOTS")); err == nil && n > 0 {
		return n
	}
	return runtime.NumCPU()
}

// SlotDir is where the slot files live: $XDPLAB_VM_SLOT_DIR, else
// /run/xdplab/vm-slots for root, else $XDG_RUNTIME_DIR/xdplab-vm-slots, else
// $TMPDIR/xdplab-vm-slots-UID. Never a shared world-writable directory:
// there another user could plant a symlink that root then follows.
func SlotDir() string {
	if d := os.Getenv("XDPLAB_VM_SLOT_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/xdplab/vm-slots"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "xdplab-vm-slots")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("xdplab-vm-slots-%d", os.Geteuid()))
}

// privateDir creates dir (0700) if need be and refuses one that another
// user could have planted or can write into.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("refusing %s: a symlink, which another user may have planted; remove it", dir)
	case !fi.IsDir():
		return fmt.Errorf("refusing %s: not a directory; remove it", dir)
	case st != nil && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("refusing %s: owned by uid %d, not by this user (%d); remove it", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("refusing %s: writable by others (%v); chmod go-w it or remove it", dir, fi.Mode().Perm())
	}
	return nil
}

// acquireSlot takes one of Slots() slots (flock'ed files in SlotDir), so
// test binaries of different packages and lab commands share the cores.
func acquireSlot(ctx context.Context) (func(), error) {
	dir := SlotDir()
	if err := privateDir(dir); err != nil {
		return nil, fmt.Errorf("vmtest: VM slots: %w", err)
	}
	n := Slots()
	for {
		for i := 0; i < n; i++ {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("slot-%d", i)), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
			if err != nil {
				return nil, err
			}
			if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
				return func() { f.Close() }, nil
			}
			f.Close()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sweepStale removes run directories whose owning process is gone (killed
// with SIGKILL, so its deferred cleanup never ran).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "xdplab-vm-*"))
	for _, d := range dirs {
		// Only our own real directories: the name is easy to plant.
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		if err != nil {
			continue // being created, or not ours
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// tempDirs records every run's temporary directory, so tests can check
// that none outlives its run.
var tempDirs sync.Map

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

// lw passes whole lines on (t.Log wants lines, not fragments).
type lw struct {
	w   io.Writer
	buf []byte
}

func (l *lw) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.w.Write(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}
