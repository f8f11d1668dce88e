package limits

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/internal/testutils"
	"github.com/xdplab/xdplab/lab/verifier"
	"github.com/xdplab/xdplab/lab/verifier/limits/kvvariants"
)

// TestLedgerCatchesBloat builds the case the ledger exists for: a store
// compiled with a larger unroll (GET_KEYS_MAX 1024 instead of 24) loads on
// this kernel, and the committed ledger must fail it, naming the kernel,
// while the shipped size passes.
func TestLedgerCatchesBloat(t *testing.T) {
	l, err := verifier.Load(filepath.Join("..", "..", "..", "tests", "ledger.json"))
	if err != nil {
		t.Fatal(err)
	}
	release := testutils.KernelRelease(t)
	kernel := ""
	for _, r := range l.Rows {
		if r.Release == release {
			kernel = r.Kernel
		}
	}
	if kernel == "" {
		t.Skipf("tests/ledger.json has no rows for kernel %s (another machine's host kernel): nothing to hold a build to", release)
	}
	ladder, err := kvvariants.Ladder("GET_KEYS_MAX")
	if err != nil {
		t.Fatal(err)
	}
	shipped, bloated := ladder[0], ladder[len(ladder)-1]
	// The variants keep the object's own value slot, the ledger's
	// "max value 1024" configuration.
	const config = "max value 1024"
	for _, c := range []struct {
		v    kvvariants.Variant
		fail bool
	}{{shipped, false}, {bloated, true}} {
		st, err := LoadKVStats(c.v, config)
		if err != nil {
			t.Fatalf("%s: %v", c.v, err)
		}
		fs := l.Check(kernel, release, []bpfload.ProgramStats{st})
		if len(fs) != 1 {
			t.Fatalf("%s: %d findings, want 1", c.v, len(fs))
		}
		f := fs[0]
		t.Logf("%s: %s", c.v, f.Msg)
		switch {
		case f.Fail != c.fail:
			t.Errorf("%s on %s: ledger verdict fail=%v, want %v: %s", c.v, kernel, f.Fail, c.fail, f.Msg)
		case c.fail && !strings.Contains(f.Msg, " on "+kernel+":"):
			t.Errorf("%s: the failure does not name kernel %s: %s", c.v, kernel, f.Msg)
		}
	}
}
