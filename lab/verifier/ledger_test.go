package verifier

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdplab/xdplab/lab/bpfload"
)

func stats(insns uint32, states int) bpfload.ProgramStats {
	return bpfload.ProgramStats{Program: "kv_xdp", Config: "max value 64", VerifiedInsn: insns, TotalStates: states}
}

func ledger() *Ledger {
	l := &Ledger{Tolerance: 0.10, MinHeadroom: 0.5}
	l.Update("5.10", "5.10.0-32-amd64", []bpfload.ProgramStats{stats(300_000, 3000)})
	l.Update("7.2", "7.2.13+deb14-amd64", []bpfload.ProgramStats{stats(114_000, 2500)})
	return l
}

func TestCheck(t *testing.T) {
	l := ledger()
	for _, tc := range []struct {
		name, kernel, release string
		got                   bpfload.ProgramStats
		fail                  bool
		msg                   string
	}{
		{"same", "5.10", "5.10.0-32-amd64", stats(300_000, 3000), false, "300000 instructions verified (ledger 300000, +0.0%), headroom 70%"},
		{"within tolerance", "5.10", "5.10.0-32-amd64", stats(329_000, 3200), false, "+9.7%"},
		{"grew", "5.10", "5.10.0-32-amd64", stats(340_000, 3000), true, "kv_xdp (max value 64) on 5.10: instructions verified grew +13% (300000 → 340000), past the 10% tolerance"},
		{"states grew", "7.2", "7.2.13+deb14-amd64", stats(114_000, 2900), true, "states grew +16% (2500 → 2900)"},
		{"headroom", "7.2", "7.2.13+deb14-amd64", stats(510_000, 2500), true, "headroom 49% of the 1000000-instruction limit is under the floor of 50%"},
		{"new program on a ledger kernel", "7.2", "7.2.13+deb14-amd64", bpfload.ProgramStats{Program: "new", VerifiedInsn: 10}, true, "no ledger row"},
		{"a host the ledger does not know", "host", "6.8.0-1-azure", stats(120_000, 2000), false, "no ledger rows for host 6.8.0-1-azure"},
	} {
		fs := l.Check(tc.kernel, tc.release, []bpfload.ProgramStats{tc.got})
		if len(fs) != 1 || fs[0].Fail != tc.fail || !strings.Contains(fs[0].Msg, tc.msg) {
			t.Errorf("%s: %+v, want fail=%v with %q", tc.name, fs, tc.fail, tc.msg)
		}
	}
}

func TestUpdateSaveLoad(t *testing.T) {
	l := ledger()
	diff := l.Update("5.10", "5.10.0-33-amd64", []bpfload.ProgramStats{stats(310_000, 3100), {Program: "proxy_xdp", VerifiedInsn: 32_000}})
	want := []string{
		"kv_xdp (max value 64) on 5.10 (5.10.0-32-amd64 → 5.10.0-33-amd64): 300000 → 310000 instructions (+3.3%), states 3000 → 3100",
		"proxy_xdp on 5.10: new, 32000 instructions, 0 states",
	}
	if strings.Join(diff, "\n") != strings.Join(want, "\n") {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(diff, "\n"), strings.Join(want, "\n"))
	}
	if d := l.Update("7.2", "7.2.13+deb14-amd64", nil); len(d) != 1 || !strings.Contains(d[0], "removed") {
		t.Errorf("removing: %v", d)
	}
	p := filepath.Join(t.TempDir(), "ledger.json")
	if err := l.Save(p); err != nil {
		t.Fatal(err)
	}
	back, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 2 || back.Rows[0].Program != "kv_xdp" || back.Rows[0].Release != "5.10.0-33-amd64" {
		t.Errorf("rows after load: %+v", back.Rows)
	}
	tab := ledger().Table(nil)
	if !strings.Contains(tab, "| kv_xdp (max value 64) | 300000 insns, 3000 states, 70% headroom **tightest** | 114000 insns, 2500 states, 89% headroom |") {
		t.Errorf("table:\n%s", tab)
	}
}

// TestUpdateFacts is what a re-pin shows: a kernel's new build compared
// with the facts the ledger holds for its name.
func TestUpdateFacts(t *testing.T) {
	l := ledger()
	old := Facts{Kernel: "6.1", Release: "6.1.0-50-amd64",
		Features: []Feature{{Name: "bpf_fib_lookup in XDP", Have: true}, {Name: "bpf_ktime_get_coarse_ns in XDP", Have: true, Since: "5.11", Path: "coarse clock"}},
		Limits:   []Limit{{Name: "stack", Value: 512, Unit: "bytes", Bound: 512}}}
	if d := l.UpdateFacts(old); len(d) != 1 || !strings.Contains(d[0], "6.1 (6.1.0-50-amd64): new, 2 features, 1 limits") {
		t.Errorf("first facts: %q", d)
	}
	if d := l.UpdateFacts(old); len(d) != 0 {
		t.Errorf("the same facts again: %q, want no change", d)
	}
	repinned := Facts{Kernel: "6.1", Release: "6.1.0-51-amd64",
		Features: []Feature{{Name: "bpf_fib_lookup in XDP"}, {Name: "bpf_loop in XDP", Have: true}},
		Limits:   []Limit{{Name: "stack", Value: 256, Unit: "bytes", Bound: 512}}}
	d := l.UpdateFacts(repinned)
	want := []string{
		"6.1 (6.1.0-50-amd64 → 6.1.0-51-amd64): bpf_fib_lookup in XDP: yes → no",
		"6.1 (6.1.0-50-amd64 → 6.1.0-51-amd64): bpf_ktime_get_coarse_ns in XDP: gone (was yes → coarse clock)",
		"6.1 (6.1.0-50-amd64 → 6.1.0-51-amd64): bpf_loop in XDP: new, yes",
		"6.1 (6.1.0-50-amd64 → 6.1.0-51-amd64): stack: 512 bytes → 256 bytes",
	}
	if strings.Join(d, "\n") != strings.Join(want, "\n") {
		t.Errorf("re-pinned build:\n%s\nwant:\n%s", strings.Join(d, "\n"), strings.Join(want, "\n"))
	}
	if len(l.Kernels) != 1 || l.Kernels[0].Release != "6.1.0-51-amd64" {
		t.Errorf("kernels after the re-pin: %+v, want the new build in place of the old", l.Kernels)
	}
	// A run without limit probes keeps the ledger's; another host's
	// kernel is a row of its own.
	l.UpdateFacts(Facts{Kernel: "6.1", Release: "6.1.0-51-amd64", Features: repinned.Features})
	l.UpdateFacts(Facts{Kernel: "host", Release: "6.8.0-1-azure", Limits: repinned.Limits})
	if len(l.Kernels) != 2 || len(l.Kernels[0].Limits) != 1 {
		t.Errorf("kernels: %+v", l.Kernels)
	}
}
