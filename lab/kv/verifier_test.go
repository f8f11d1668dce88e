package kv

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/internal/testutils"
	"github.com/xdplab/xdplab/lab/verifier"
)

// TestFeatures probes every helper the store's programs call and records
// which clock path the store took: bpf_ktime_get_coarse_ns came in 5.11, so
// from there "unsupported" is a bug; before it the store reads
// bpf_ktime_get_ns. Any other helper missing fails: the store needs it.
func TestFeatures(t *testing.T) {
	spec, err := loadKv()
	if err != nil {
		t.Fatal(err)
	}
	fs, err := verifier.ProbeHelpers(spec)
	if err != nil {
		t.Fatal(err)
	}
	o := loadForTest(t, Config{})
	coarse := verifier.HelperFeature(ebpf.XDP, asm.FnKtimeGetCoarseNs)
	found := false
	for i, f := range fs {
		if f.Name != coarse {
			continue
		}
		found = true
		if f.Have != o.coarse {
			t.Errorf("%s: the probe says %v, the store's own probe %v", f.Name, f.Have, o.coarse)
		}
		fs[i].Since, fs[i].Path = "5.11", "bpf_ktime_get_ns"
		if o.coarse {
			fs[i].Path = "coarse clock"
		}
	}
	if !found {
		t.Errorf("the store no longer calls %s: update this test", coarse)
	}
	markXDPBytes(t, fs, o.xdpBytes)
	testutils.CheckFeatures(t, "kv", fs)
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

// markXDPBytes marks bpf_xdp_load_bytes and bpf_xdp_store_bytes (5.18) in
// fs as features the program can do without, with the path it took (have:
// its loader's probe), and fails if it no longer calls them.
func markXDPBytes(t *testing.T, fs []verifier.Feature, have bool) {
	t.Helper()
	for _, fn := range []asm.BuiltinFunc{asm.FnXdpLoadBytes, asm.FnXdpStoreBytes} {
		name := verifier.HelperFeature(ebpf.XDP, fn)
		found := false
		for i, f := range fs {
			if f.Name != name {
				continue
			}
			found = true
			if f.Have != have {
				t.Errorf("%s: the probe says %v, the loader's own probe %v", f.Name, f.Have, have)
			}
			fs[i].Since, fs[i].Path = "5.18", "copy loops"
			if have {
				fs[i].Path = "one helper call per copy"
			}
		}
		if !found {
			t.Errorf("the store no longer calls %s: update this test", name)
		}
	}
}
