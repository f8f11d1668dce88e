package kv

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/internal/testutils"
)

// TestCoarseClockProbe holds the probe to what the kernel must have:
// bpf_ktime_get_coarse_ns came in 5.11, so from there "unsupported" is a bug.
func TestCoarseClockProbe(t *testing.T) {
	o := loadForTest(t, Config{})
	if !o.coarse {
		testutils.Missing(t, "bpf_ktime_get_coarse_ns in XDP (the store reads the clock without it)", "5.11", nil)
	}
}

// TestVerifierStats loads the store at its default and largest sizes and
// records what the verifier did, for the kernel-matrix report.
func TestVerifierStats(t *testing.T) {
	var all []bpfload.ProgramStats
	for _, cfg := range []Config{{MaxValue: 64}, {MaxValue: maxValueLimit}} {
		o := loadForTest(t, cfg)
		for _, p := range []struct {
			name string
			prog *ebpf.Program
		}{{"kv_xdp", o.objs.KvXdp}, {"kv_control", o.objs.KvControl}} {
			st, err := bpfload.Stats(p.name, fmt.Sprintf("max value %d", o.cfg.MaxValue), p.prog)
			if err != nil {
				t.Errorf("%s: %v", p.name, err)
			}
			all = append(all, st)
		}
	}
	testutils.RecordVerifierStats(t, "kv", all)
}
