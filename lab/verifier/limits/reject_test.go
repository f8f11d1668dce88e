package limits

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplab/xdplab/lab/verifier"
)

// TestMustReject loads programs the verifier must refuse on every kernel,
// each next to its fixed twin, which must load: so a refusal is the bug's,
// not a malformed program's. The expected messages are kernel wording,
// which changes between releases (kernel/bpf/verifier.c), so each case
// accepts a few.
func TestMustReject(t *testing.T) {
	for _, c := range []struct {
		name     string
		prog     func(t *testing.T, buggy bool) *ebpf.ProgramSpec
		messages []string
	}{
		{"packet-read-unchecked", func(_ *testing.T, buggy bool) *ebpf.ProgramSpec { return PacketRead(!buggy) },
			[]string{"invalid access to packet"}},
		{"unbounded-loop", func(_ *testing.T, buggy bool) *ebpf.ProgramSpec { return Loop(!buggy) },
			[]string{"infinite loop detected", "back-edge", "BPF program is too large"}},
		{"stack-overflow", func(_ *testing.T, buggy bool) *ebpf.ProgramSpec {
			n := int16(verifier.StackLimit)
			if buggy {
				n += 8
			}
			return StackUse(n)
		}, []string{"invalid stack off", "invalid write to stack", "combined stack size", "stack size"}},
		{"spin-lock-held-at-exit", func(t *testing.T, buggy bool) *ebpf.ProgramSpec {
			m, err := SpinLockMap()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			return SpinLock(m, !buggy)
		}, []string{"bpf_spin_unlock is missing", "cannot be used inside bpf_spin_lock-ed region"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Load(c.prog(t, false)); err != nil {
				t.Fatalf("the fixed twin is refused, so the case proves nothing: %v\n%s", err, logTail(err))
			}
			_, err := Load(c.prog(t, true))
			var ve *ebpf.VerifierError
			switch {
			case err == nil:
				t.Fatalf("the verifier accepted it")
			case !errors.As(err, &ve):
				t.Fatalf("refused, but not by the verifier: %v", err)
			case !matchAny(err, c.messages):
				t.Fatalf("refused with an unexpected message (want one of %q):\n%s", c.messages, logTail(err))
			}
			t.Logf("refused: %s", Refusal(err))
		})
	}
}

// matchAny says whether the verifier's log (or the error) holds one of the
// phrases, as regular expressions, case-insensitively.
func matchAny(err error, phrases []string) bool {
	text := err.Error()
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		text += "\n" + strings.Join(ve.Log, "\n")
	}
	for _, p := range phrases {
		if regexp.MustCompile("(?i)" + p).MatchString(text) {
			return true
		}
	}
	return false
}

// logTail is the verifier log's last lines, for a failure message.
func logTail(err error) string {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	log := ve.Log
	if len(log) > 12 {
		log = log[len(log)-12:]
	}
	return "  " + strings.Join(log, "\n  ")
}
