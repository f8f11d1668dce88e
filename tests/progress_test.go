package tests

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/kernels"
	"golang.org/x/sys/unix"
)

// Progress lines (a kernel fetched, booted, each suite done, the kernel
// done) are printed while the matrix runs, not at its end. go test holds a
// test binary's stdout and stderr until the package ends (unless -v on a
// single package), so they go to the go command's own stderr, which it does
// not hold, when the go command is our parent; `go test -json` keeps a clean
// stdout. $XDPLAB_PROGRESS names another file, or "off".
var progress = struct {
	sync.Mutex
	w     io.Writer
	start time.Time
}{w: progressWriter(), start: time.Now()}

func progressWriter() io.Writer {
	switch p := os.Getenv("XDPLAB_PROGRESS"); p {
	case "off", "0":
		return io.Discard
	case "":
	default:
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			return f
		}
	}
	if f := parentStderr(); f != nil {
		return f
	}
	return os.Stderr
}

// parentStderr is the go command's stderr when it is our parent: the same
// open file (pidfd_getfd, so a log file's offset is shared and neither
// writer overwrites the other), or, where that is refused, the same pipe or
// terminal reopened. A regular file is never reopened: a second offset
// into it would overwrite what go writes, or be overwritten.
func parentStderr() *os.File {
	ppid := os.Getppid()
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", ppid)); err != nil || filepath.Base(exe) != "go" {
		return nil
	}
	if pidfd, err := unix.PidfdOpen(ppid, 0); err == nil {
		defer unix.Close(pidfd)
		if fd, err := unix.PidfdGetfd(pidfd, 2, 0); err == nil {
			return os.NewFile(uintptr(fd), "go's stderr")
		}
	}
	path := fmt.Sprintf("/proc/%d/fd/2", ppid)
	if fi, err := os.Stat(path); err != nil || fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil
	}
	return f
}

// progressf prints one progress line, stamped with the run's elapsed time.
func progressf(format string, args ...any) {
	progress.Lock()
	defer progress.Unlock()
	fmt.Fprintf(progress.w, "[matrix %4.0fs] %s\n", time.Since(progress.start).Seconds(), fmt.Sprintf(format, args...))
}

// suiteWatch reads a guest's stdout as it streams and reports when the
// guest command starts (the VM has booted) and when each suite finishes,
// with its top-level results counted from the test2json-framed output.
type suiteWatch struct {
	kernel  string
	start   time.Time
	current int // index of the running suite, -1 before the first
	since   time.Time
	counts  map[string]int
	booted  bool
}

func newSuiteWatch(k *kernels.Kernel, start time.Time) *suiteWatch {
	// The running kernel has no boot to report.
	return &suiteWatch{kernel: k.Name, start: start, current: -1, counts: map[string]int{}, booted: k.IsHost()}
}

// Write takes one line: vmtest writes its Stdout a whole line at a time.
func (w *suiteWatch) Write(b []byte) (int, error) {
	w.line(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func (w *suiteWatch) line(l string) {
	if n, ok := suiteMarker(l); ok {
		if !w.booted {
			w.booted = true
			progressf("%s: booted in %.0fs, running the suites", w.kernel, time.Since(w.start).Seconds())
		}
		w.finish()
		w.current, w.since, w.counts = n, time.Now(), map[string]int{}
		return
	}
	// test2json framing: "^V--- PASS: TestName (0.1s)", subtests unindented.
	l = strings.TrimPrefix(l, "\x16--- ")
	result, rest, ok := strings.Cut(l, ": ")
	name, _, _ := strings.Cut(rest, " ")
	if ok && !strings.Contains(name, "/") {
		w.counts[result]++
	}
}

// finish reports the running suite, if any.
func (w *suiteWatch) finish() {
	if w.current < 0 || w.current >= len(suites) {
		return
	}
	s := suites[w.current]
	took := time.Since(w.since).Seconds()
	if s.bench != "" {
		progressf("%s: %s done (%.0fs)", w.kernel, s.name, took)
	} else {
		progressf("%s: %s done: %d passed, %d failed, %d skipped (%.0fs)", w.kernel, s.name, w.counts["PASS"], w.counts["FAIL"], w.counts["SKIP"], took)
	}
	w.current = -1
}

// suiteMarker parses the line the guest script prints before suite i.
func suiteMarker(l string) (int, bool) {
	if len(l) <= len(marker) || l[:len(marker)] != marker {
		return 0, false
	}
	n, err := strconv.Atoi(l[len(marker):])
	return n, err == nil
}

func TestSuiteWatch(t *testing.T) {
	var out strings.Builder
	progress.Lock()
	saved := progress.w
	progress.w = &out
	progress.Unlock()
	defer func() { progress.Lock(); progress.w = saved; progress.Unlock() }()

	k := &kernels.Kernel{Name: "6.1", Release: "6.1.0-50-amd64"}
	w := newSuiteWatch(k, time.Now())
	for _, l := range []string{
		"[    1.2] some boot noise",
		marker + "0",
		"\x16=== RUN   TestA",
		"\x16--- PASS: TestA/sub (0.01s)", // subtests do not count
		"\x16--- PASS: TestA (0.10s)",
		"\x16--- FAIL: TestB (0.20s)",
		"\x16--- SKIP: TestC (0.00s)",
		"--- PASS: not framed, printed by a test",
		marker + "1",
		"\x16--- PASS: TestD (0.10s)",
	} {
		w.Write([]byte(l + "\n"))
	}
	w.finish()
	got := out.String()
	for _, want := range []string{
		"6.1: booted in 0s, running the suites\n",
		"6.1: " + suites[0].name + " done: 1 passed, 1 failed, 1 skipped (",
		"6.1: " + suites[1].name + " done: 1 passed, 0 failed, 0 skipped (",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("progress lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 3 {
		t.Errorf("%d progress lines, want 3:\n%s", n, got)
	}
}
