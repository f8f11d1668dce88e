package kv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/bpfload"
	"golang.org/x/sys/unix"
)

// ProgramStats is what the verifier suite records per program and kernel.
type ProgramStats struct {
	Program      string `json:"program"`
	VerifiedInsn uint32 `json:"verified_insns"`
	XlatedBytes  int    `json:"xlated_bytes"`
	JitedBytes   uint32 `json:"jited_bytes"`
	LoadMicros   int64  `json:"load_us"`
}

// TestCoarseClockProbe holds the probe to what the kernel must have:
// bpf_ktime_get_coarse_ns came in 5.11, so from there "unsupported" is a bug.
func TestCoarseClockProbe(t *testing.T) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	o := loadForTest(t, Config{})
	must := major > 5 || major == 5 && minor >= 11
	if must && !o.coarse {
		t.Fatalf("kernel %d.%d: probe says bpf_ktime_get_coarse_ns is missing", major, minor)
	}
	t.Logf("kernel %d.%d: coarse clock %v", major, minor, o.coarse)
}

// TestVerifierStats loads the store at its default and largest sizes and
// records what the verifier did, for the kernel-matrix report
// ($XDPLAB_RESULTS/verifier-kv.json when set).
func TestVerifierStats(t *testing.T) {
	var all []ProgramStats
	for _, cfg := range []Config{{MaxValue: 64}, {MaxValue: maxValueLimit}} {
		o := loadForTest(t, cfg)
		for name, p := range map[string]*ebpf.Program{"kv_xdp": o.objs.KvXdp, "kv_control": o.objs.KvControl} {
			info, err := p.Info()
			if err != nil {
				t.Fatal(err)
			}
			st := ProgramStats{Program: name}
			if st.VerifiedInsn, err = bpfload.VerifiedInsns(p); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			st.XlatedBytes, _ = info.TranslatedSize()
			st.JitedBytes, _ = info.JitedSize()
			if d, ok := info.LoadTime(); ok {
				st.LoadMicros = d.Microseconds()
			}
			t.Logf("%s (max value %d): %d instructions verified, %d bytes translated, %d bytes JITed",
				name, o.cfg.MaxValue, st.VerifiedInsn, st.XlatedBytes, st.JitedBytes)
			all = append(all, st)
		}
	}
	if dir := os.Getenv("XDPLAB_RESULTS"); dir != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, "verifier-kv.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
