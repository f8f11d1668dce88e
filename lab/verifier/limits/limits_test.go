package limits

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/xdplab/xdplab/lab/internal/testutils"
	"github.com/xdplab/xdplab/lab/verifier"
)

func TestMain(m *testing.M) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		panic(err)
	}
	m.Run()
}

// limitsTest runs each probe as a subtest and records what they found for
// the matrix report as limits-NAME.json.
type limitsTest struct {
	t     *testing.T
	found []verifier.Limit
}

// run runs probe as subtest name; check asserts on its result.
func (lt *limitsTest) run(name string, probe func() (Probe, error), check func(t *testing.T, p Probe)) {
	lt.t.Run(name, func(t *testing.T) {
		p, err := probe()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s", p.Limit)
		lt.found = append(lt.found, p.Limit)
		check(t, p)
	})
}

// refusedFor asserts that the search found a refusal and that the verifier
// said why in one of the expected ways.
func refusedFor(t *testing.T, p Probe, why ...string) {
	t.Helper()
	if p.Refused == 0 {
		t.Fatalf("%s: nothing was refused up to %d: the search did not reach the limit", p.Name, p.Best)
	}
	if !matchAny(p.Why, why) {
		t.Errorf("%s: refused for an unexpected reason (want one of %q):\n%s", p.Name, why, logTail(p.Why))
	}
}

// TestLimits finds the verifier's generic limits on this kernel and asserts
// those the kernel defines.
func TestLimits(t *testing.T) {
	lt := &limitsTest{t: t}
	lt.run("key-compare-loop", KeyCompareLimit, func(t *testing.T, p Probe) {
		// What stops it is the kernel's, not ours: the instruction budget,
		// or the pending branches (each early exit is one, kept until the
		// loop ends: BPF_COMPLEXITY_LIMIT_JMP_SEQ).
		refusedFor(t, p, "too large", "too complex")
	})
	lt.run("instructions", InsnLimit, func(t *testing.T, p Probe) {
		refusedFor(t, p, "BPF program is too large")
		step := int64(p.RefusedInsns) - p.Value
		switch {
		case p.Value > verifier.InsnLimit:
			t.Errorf("a program verified in %d instructions loaded, past the kernel's limit of %d", p.Value, verifier.InsnLimit)
		case p.RefusedInsns <= verifier.InsnLimit:
			t.Errorf("the verifier gave up after %d instructions, within the kernel's limit of %d", p.RefusedInsns, verifier.InsnLimit)
		case step > 3: // Walk's largest step
			t.Errorf("the largest program that loads verified %d instructions and the next one larger was refused at %d: no straddle", p.Value, p.RefusedInsns)
		}
	})
	lt.run("stack", StackLimit, func(t *testing.T, p Probe) {
		refusedFor(t, p, "invalid stack off", "invalid write to stack", "stack size")
		if p.Value != verifier.StackLimit {
			t.Errorf("the largest stack that loads is %d bytes, want MAX_BPF_STACK, %d", p.Value, verifier.StackLimit)
		}
	})
	lt.run("tail-calls", TailCallDepth, func(t *testing.T, p Probe) {
		// Other JITs (and the interpreter before 5.17) have counted
		// differently; x86-64 is the one the matrix runs.
		if runtime.GOARCH == "amd64" && p.Value != verifier.TailCallLimit {
			t.Errorf("one run made %d tail calls, want %d (MAX_TAIL_CALL_CNT as x86-64 enforces it)", p.Value, verifier.TailCallLimit)
		}
		if p.Value < 1 {
			t.Errorf("no tail call was made: %s", p.Note)
		}
	})
	testutils.RecordLimits(t, "verifier", lt.found)
}

// TestStoreLimits finds the largest store sizes that still load on this
// kernel, on each size's ladder of compiled variants (kvvariants). The
// shipped size, the ladder's first rung, must load.
func TestStoreLimits(t *testing.T) {
	lt := &limitsTest{t: t}
	for _, c := range []struct{ test, name, macro, unit string }{
		{"get-keys", "keys per GET in XDP", "GET_KEYS_MAX", "keys"},
		{"value-slot", "in-kernel value slot", "KV_VAL_MAX", "bytes"},
		{"key-length", "key length", "KV_KEY_MAX", "bytes"},
	} {
		lt.run(c.test, func() (Probe, error) { return StoreLimit(c.name, c.macro, c.unit) }, func(t *testing.T, p Probe) {
			if p.Refused == 0 {
				return // every rung loads: the value says "at least"
			}
			// A refusal must be the verifier's or the kernel's refusing a
			// map that size, not a broken object.
			var ve *ebpf.VerifierError
			if !errors.As(p.Why, &ve) && !strings.Contains(p.Why.Error(), "map create") {
				t.Errorf("%s: refused, but not by the verifier or map creation: %v", p.Name, p.Why)
			}
		})
	}
	testutils.RecordLimits(t, "kv", lt.found)
}
