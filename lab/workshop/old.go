package workshop

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/verifier"
)

// Lesson 6's checks.
const (
	CheckOldPath   = "with have_xdp_bytes = 0 the kernel keeps no call of a helper newer than Linux 5.10"
	CheckNewPath   = "with have_xdp_bytes = 1 the program uses bpf_xdp_load_bytes and _store_bytes, and works the same"
	CheckOldBudget = "the verifier walks at most 250,000 instructions for the 5.10 path"
)

// newHelpers are the helpers lesson 6's starter calls, which came in Linux
// 5.18 (5.10's newest helper is bpf_redirect_peer, number 155).
var newHelpers = []asm.BuiltinFunc{asm.FnXdpLoadBytes, asm.FnXdpStoreBytes}

// oldBudget leaves room under the 1,000,000 instructions 5.10's verifier
// allows: older verifiers prune fewer states than the host's may.
const oldBudget = 250_000

func init() {
	checks := []Check{
		{Name: CheckOldPath, Run: oldPath,
			Hint: "if (have_xdp_bytes) { the call } else { lesson 5's loop }: user space sets have_xdp_bytes before loading, so the verifier knows it and drops the branch not taken, calls and all"},
		{Name: CheckReplyPass, Run: replyPass},
		{Name: CheckGetHit, Run: getHit},
		{Name: CheckSetStored, Run: setStored},
		{Name: CheckSetThenGet, Run: setThenGet},
		{Name: CheckSetNoreply, Run: setNoreply},
		{Name: CheckSetLeaves, Run: setLeaves},
		{Name: CheckSetLock, Run: setLock},
		{Name: CheckSetConcurrent, Run: setConcurrent},
		{Name: CheckNewPath, Run: newPath,
			Hint: "keep the helper calls in the have_xdp_bytes branch: where the kernel has them they are one call instead of a loop"},
		{Name: CheckOldBudget, Run: oldBudgetCheck},
	}
	checks = append(checks, lesson1Checks...)
	checks = append(checks, Check{Name: CheckSetVeth, Run: setVeth})
	register(&Lesson{N: 6, Slug: "old", Title: "the oldest kernel", Program: "xdp_prog",
		// The checks run the path 5.10 takes, on every kernel.
		Vars: map[string]any{"have_xdp_bytes": uint8(0)}, Checks: checks})
}

// haveHelper probes the running kernel for fn in XDP programs.
func haveHelper(fn asm.BuiltinFunc) (bool, error) {
	err := features.HaveProgramHelper(ebpf.XDP, fn)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	return err == nil, err
}

// xlatedCalls counts the helper calls in p as the kernel keeps it, by the
// call's immediate (the kernel turns a helper's number into the offset of
// its code, and drops the code the verifier found dead).
func xlatedCalls(p *ebpf.Program) (map[int64]int, error) {
	info, err := p.Info()
	if err != nil {
		return nil, err
	}
	insns, err := info.Instructions()
	if err != nil {
		return nil, fmt.Errorf("reading the loaded program's instructions: %w", err)
	}
	calls := map[int64]int{}
	for _, ins := range insns {
		if ins.IsBuiltinCall() {
			calls[ins.Constant]++
		}
	}
	return calls, nil
}

// helperImm is the immediate a call of fn has in an XDP program the
// kernel keeps: a two-line program calling it is loaded to find out.
func helperImm(fn asm.BuiltinFunc) (int64, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R2, 0),
		asm.StoreMem(asm.R10, -8, asm.R2, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 1),
		fn.Call(),
		asm.Mov.Imm(asm.R0, XDPPass),
		asm.Return(),
	}})
	if err != nil {
		return 0, bpfload.Explain("probe of "+verifier.HelperFeature(ebpf.XDP, fn), err)
	}
	defer p.Close()
	calls, err := xlatedCalls(p)
	if err != nil {
		return 0, err
	}
	for imm := range calls {
		return imm, nil
	}
	return 0, errors.New("the probe program has no call")
}

// newCalls counts, per new helper the kernel has, its calls in p.
func newCalls(p *ebpf.Program) (map[asm.BuiltinFunc]int, error) {
	calls, err := xlatedCalls(p)
	if err != nil {
		return nil, err
	}
	n := map[asm.BuiltinFunc]int{}
	for _, fn := range newHelpers {
		have, err := haveHelper(fn)
		if err != nil {
			return nil, err
		}
		if !have {
			continue // then the program could not have loaded with a call of it
		}
		imm, err := helperImm(fn)
		if err != nil {
			return nil, err
		}
		if imm == 0 {
			return nil, Skip("this kernel shows translated calls without their targets (kptr_restrict), so which helpers a program calls cannot be read back")
		}
		n[fn] = calls[imm]
	}
	return n, nil
}

func oldPath(e *Env) error {
	n, err := newCalls(e.prog)
	if err != nil {
		return err
	}
	for _, fn := range newHelpers {
		if n[fn] > 0 {
			return fmt.Errorf("with have_xdp_bytes = 0 the loaded program still calls %s (%d place(s)); it came in Linux 5.18, and on 5.10 the verifier would refuse the program: \"unknown func\"", verifier.HelperFeature(ebpf.XDP, fn), n[fn])
		}
	}
	return nil
}

func newPath(e *Env) error {
	for _, fn := range newHelpers {
		have, err := haveHelper(fn)
		if err != nil {
			return err
		}
		if !have {
			return Skip("this kernel has no %s (probed with cilium/ebpf's features package): only the loop path can run here, and the checks above ran it", verifier.HelperFeature(ebpf.XDP, fn))
		}
	}
	coll, prog, err := e.loadWith(map[string]any{"have_xdp_bytes": uint8(1)})
	if err != nil {
		return err
	}
	defer coll.Close()
	n, err := newCalls(prog)
	if err != nil {
		return err
	}
	for _, fn := range newHelpers {
		if n[fn] == 0 {
			return fmt.Errorf("with have_xdp_bytes = 1 the program never calls %s: keep it for kernels that have it", verifier.HelperFeature(ebpf.XDP, fn))
		}
	}
	fast := &Env{ctx: e.ctx, lesson: e.lesson, short: e.short, spec: e.spec, coll: coll, prog: prog}
	return setThenGet(fast)
}

func oldBudgetCheck(e *Env) error {
	n, err := bpfload.VerifiedInsns(e.prog)
	if err != nil {
		return err
	}
	if n > oldBudget {
		return fmt.Errorf("the verifier walked %d instructions for the 5.10 path; keep it under %d: 5.10 allows 1,000,000 and its verifier prunes less than this kernel's", n, oldBudget)
	}
	return nil
}
