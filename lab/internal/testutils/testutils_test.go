package testutils

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplab/xdplab/lab/verifier"
)

func TestParseVersion(t *testing.T) {
	for s, want := range map[string]Version{"5.10": {5, 10, 0}, "6.1.0-50-amd64": {6, 1, 0}, "6.12.117+deb13-amd64": {6, 12, 117}} {
		if v, err := ParseVersion(s); err != nil || v != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", s, v, err, want)
		}
	}
	if _, err := ParseVersion("host"); err == nil {
		t.Error("ParseVersion(host): no error")
	}
	if !(Version{5, 10, 0}).Less(Version{5, 15, 0}) || (Version{6, 1, 0}).Less(Version{5, 15, 0}) {
		t.Error("Less is wrong")
	}
}

// fakeTB records how a helper stopped the test.
type fakeTB struct {
	testing.TB
	how, msg string
	errs     []string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skipf(format string, args ...any)  { f.stop("skip", format, args...) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.stop("fail", format, args...) }
func (f *fakeTB) Fatal(args ...any)                 { f.stop("fail", "%s", fmt.Sprint(args...)) }
func (f *fakeTB) Logf(string, ...any)               {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) stop(how, format string, args ...any) {
	f.how, f.msg = how, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
	return f
}

func TestMissing(t *testing.T) {
	have := KernelVersion(t)
	older := fmt.Sprintf("%d.%d", have[0]+1, 0) // a version the running kernel predates
	newer := "3.0"                              // one it must have
	for _, tc := range []struct {
		name, how, want string
		fn              func(tb testing.TB)
	}{
		{"older kernel skips", "skip", "lacks feature X (needs " + older + ")", func(tb testing.TB) { Missing(tb, "feature X", older, nil) }},
		{"newer kernel fails", "fail", "feature X is missing on kernel " + have.String() + ", which must have it (it came in 3.0): EINVAL", func(tb testing.TB) {
			Missing(tb, "feature X", newer, errors.New("EINVAL"))
		}},
		{"not supported", "skip", "not supported", func(tb testing.TB) {
			SkipIfNotSupported(tb, "feature X", older, fmt.Errorf("probe: %w", ebpf.ErrNotSupported))
		}},
		{"other error fails", "fail", "feature X: boom", func(tb testing.TB) { SkipIfNotSupported(tb, "feature X", older, errors.New("boom")) }},
		{"nil returns", "", "", func(tb testing.TB) { SkipIfNotSupported(tb, "feature X", older, nil) }},
	} {
		f := run(tc.fn)
		if f.how != tc.how || !strings.Contains(f.msg, tc.want) {
			t.Errorf("%s: %s %q, want %s containing %q", tc.name, f.how, f.msg, tc.how, tc.want)
		}
	}
}

func TestCheckFeatures(t *testing.T) {
	t.Setenv("XDPLAB_RESULTS", "")
	have := KernelVersion(t)
	older := fmt.Sprintf("%d.%d", have[0]+1, 0)
	f := run(func(tb testing.TB) {
		CheckFeatures(tb, "x", []verifier.Feature{{Name: "helper A", Have: true}, {Name: "helper B"}})
	})
	if len(f.errs) != 1 || !strings.Contains(f.errs[0], "helper B: missing") || f.how != "" {
		t.Errorf("a needed helper missing: errors %q, stopped %q; want one error naming it", f.errs, f.how)
	}
	f = run(func(tb testing.TB) {
		CheckFeatures(tb, "x", []verifier.Feature{{Name: "clock C", Since: older, Path: "the slow clock"}})
	})
	if f.how != "skip" || !strings.Contains(f.msg, "the program takes the slow clock") {
		t.Errorf("an optional feature the kernel predates: %s %q, want a skip naming the path", f.how, f.msg)
	}
	f = run(func(tb testing.TB) {
		CheckFeatures(tb, "x", []verifier.Feature{{Name: "clock C", Since: "3.0", Path: "the slow clock"}})
	})
	if f.how != "fail" {
		t.Errorf("an optional feature the kernel must have, missing: %s %q, want a failure", f.how, f.msg)
	}
}
