package bpfload

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

func TestExplain(t *testing.T) {
	if err := Explain("store", unix.EPERM); !strings.Contains(err.Error(), "needs root") || !errors.Is(err, unix.EPERM) {
		t.Errorf("EPERM: %v", err)
	}
	if err := Explain("store", errors.New("boom")); err.Error() != "load store: boom" {
		t.Errorf("other: %v", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Skip("cannot load BPF here:", err)
	}
	// A program the verifier must reject: it returns without setting R0.
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{asm.Return()}})
	if errors.Is(err, unix.EPERM) {
		t.Skip("not allowed to load BPF here (run as root)")
	}
	if got := Explain("proxy", err); !strings.Contains(got.Error(), "verifier rejected the proxy") || !strings.Contains(got.Error(), "R0") {
		t.Errorf("verifier: %v", got)
	}
}

func TestStats(t *testing.T) {
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Skip("cannot load BPF here:", err)
	}
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}}, Options().Programs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	st, err := Stats("pass", "tiny", p)
	if err != nil {
		t.Fatal(err)
	}
	if st.VerifiedInsn != 4 || st.StackDepth != "8" || st.XlatedBytes == 0 || st.Config != "tiny" {
		t.Errorf("stats %+v, want 4 instructions, stack 8 (log %q)", st, p.VerifierLog)
	}
}

func TestCauses(t *testing.T) {
	for line, want := range map[string]string{
		"invalid access to packet, off=34 size=2, R2(id=0,off=34,r=0)": "bounds check",
		"R3 offset is outside of the packet":                           "bounds check",
		"R1 invalid mem access 'map_value_or_null'":                    "NULL",
		"back-edge from insn 20 to 12":                                 "loop",
		"infinite loop detected at insn 5":                             "loop",
		"BPF program is too large. Processed 1000001 insn":             "loop",
		"invalid read from stack off -16+0 size 8":                     "initialise",
		"R2 !read_ok":                          "initialise",
		"R0 !read_ok":                          "return value",
		"unknown func bpf_xdp_store_bytes#190": "helper",
		"invalid func unknown#190":             "helper", // 5.10's words for a helper it lacks
	} {
		got := strings.Join(Causes([]string{"0: (b7) r0 = 0", line}), " | ")
		if !strings.Contains(got, want) {
			t.Errorf("Causes(%q) = %q, want it to mention %q", line, got, want)
		}
	}
	if got := Causes([]string{"processed 5 insns"}); got != nil {
		t.Errorf("Causes of a log with no known mistake = %q, want none", got)
	}
}
