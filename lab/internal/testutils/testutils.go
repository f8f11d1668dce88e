// Package testutils is what the project's tests share about the kernel they
// run on (the host's, or a pinned one in the kernel matrix): its version,
// one way to stop a test for a missing kernel feature, and the verifier
// statistics and limits the matrix report collects. cilium/ebpf's internal/testutils is
// the model.
//
// A missing feature is a skip only where the kernel may lack it: on a
// kernel at or past the version that brought the feature, "missing" means a
// broken probe or a broken guest, and the test fails.
package testutils

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/verifier"
)

// Version is a kernel version: major, minor, patch.
type Version [3]int

// ParseVersion reads "5.10", "6.1.0-50-amd64" or "6.12.117+deb13-amd64".
func ParseVersion(s string) (Version, error) {
	var v Version
	if n, _ := fmt.Sscanf(s, "%d.%d.%d", &v[0], &v[1], &v[2]); n < 2 {
		return Version{}, fmt.Errorf("not a kernel version: %q", s)
	}
	return v, nil
}

// Less orders versions.
func (v Version) Less(o Version) bool {
	for i := range v {
		if v[i] != o[i] {
			return v[i] < o[i]
		}
	}
	return false
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// KernelRelease is the running kernel's release (uname -r).
func KernelRelease(tb testing.TB) string {
	tb.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		tb.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// KernelVersion is the running kernel's version (uname -r).
func KernelVersion(tb testing.TB) Version {
	tb.Helper()
	v, err := ParseVersion(KernelRelease(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// Missing stops tb because the kernel lacks feature, which came in Linux
// since ("5.15"): a skip saying so on an older kernel, a failure on a kernel
// that must have it. why is what showed it missing (an error, a probe's
// answer); it may be nil.
func Missing(tb testing.TB, feature, since string, why error) {
	tb.Helper()
	want, err := ParseVersion(since)
	if err != nil {
		tb.Fatal(err)
	}
	have := KernelVersion(tb)
	reason := ""
	if why != nil {
		reason = ": " + why.Error()
	}
	if have.Less(want) {
		tb.Skipf("kernel %s lacks %s (needs %s)%s", have, feature, since, reason)
	}
	tb.Fatalf("%s is missing on kernel %s, which must have it (it came in %s)%s", feature, have, since, reason)
}

// SkipIfNotSupported returns when err is nil, stops tb as Missing does when
// err says the kernel does not support something (ebpf.ErrNotSupported, as
// cilium/ebpf's feature probes and loaders say it), and fails tb otherwise.
func SkipIfNotSupported(tb testing.TB, feature, since string, err error) {
	tb.Helper()
	switch {
	case err == nil:
	case errors.Is(err, ebpf.ErrNotSupported):
		Missing(tb, feature, since, err)
	default:
		tb.Fatalf("%s: %v", feature, err)
	}
}

// RecordVerifierStats logs what the verifier did with each program and, in
// the kernel matrix ($XDPLAB_RESULTS set), writes it to
// $XDPLAB_RESULTS/verifier-NAME.json, which the report collects.
func RecordVerifierStats(tb testing.TB, name string, stats []bpfload.ProgramStats) {
	tb.Helper()
	for _, s := range stats {
		tb.Logf("%s", s)
	}
	writeResults(tb, "verifier-"+name+".json", stats)
}

// RecordLimits logs what the limit probes found and, in the kernel matrix
// ($XDPLAB_RESULTS set), writes it to $XDPLAB_RESULTS/limits-NAME.json, which
// the report collects.
func RecordLimits(tb testing.TB, name string, limits []verifier.Limit) {
	tb.Helper()
	for _, l := range limits {
		tb.Logf("%s", l)
	}
	writeResults(tb, "limits-"+name+".json", limits)
}

// RecordRoom logs what a probe measured of how far XDP replies can grow
// on this kernel (on a veth: head and tail room, the largest value the
// store answers in XDP) and, in the kernel matrix ($XDPLAB_RESULTS set),
// writes it to $XDPLAB_RESULTS/room-NAME.json, which the report collects.
func RecordRoom(tb testing.TB, name string, room []verifier.Limit) {
	tb.Helper()
	for _, l := range room {
		tb.Logf("%s", l)
	}
	writeResults(tb, "room-"+name+".json", room)
}

// CheckFeatures records what the feature probes found, for the matrix
// report ($XDPLAB_RESULTS/features-NAME.json), and holds them to what the
// kernel must have: a feature a program can do without (Since set) stops
// tb as Missing does, and one a program cannot do without fails tb (its
// program could not have loaded).
func CheckFeatures(tb testing.TB, name string, fs []verifier.Feature) {
	tb.Helper()
	for _, f := range fs {
		tb.Logf("%s", f)
	}
	writeResults(tb, "features-"+name+".json", fs)
	for _, f := range fs {
		if !f.Have && f.Since == "" {
			tb.Errorf("%s: missing on this kernel, and a shipped program needs it", f.Name)
		}
	}
	for _, f := range fs {
		if !f.Have && f.Since != "" {
			Missing(tb, f.Name, f.Since, fmt.Errorf("the program takes %s", f.Path))
		}
	}
}

// writeResults writes v as JSON to file in $XDPLAB_RESULTS, if set.
func writeResults(tb testing.TB, file string, v any) {
	tb.Helper()
	dir := os.Getenv("XDPLAB_RESULTS")
	if dir == "" {
		return
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
		tb.Fatal(err)
	}
}
