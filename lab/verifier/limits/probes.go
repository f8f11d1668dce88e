package limits

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xdplab/xdplab/lab/verifier"
	"github.com/xdplab/xdplab/lab/verifier/limits/kvvariants"
)

// Probe is a limit found, with what the search saw.
type Probe struct {
	verifier.Limit
	Found
	// RefusedInsns is what the refusal's log says the verifier had walked
	// when it gave up (0 if it does not say).
	RefusedInsns int
}

// probe makes a search's result a Probe; what names a point searched
// ("a stack of 520 bytes").
func probe(name, unit string, bound int64, f Found, value int64, what func(n int) string) Probe {
	p := Probe{Limit: verifier.Limit{Name: name, Value: value, Unit: unit, Bound: bound}, Found: f}
	if f.Refused == 0 {
		p.AtLeast = true
		p.Note = fmt.Sprintf("nothing refused up to %s (%d loads)", what(f.Best), f.Tries)
		return p
	}
	p.RefusedInsns = Processed(f.Why)
	p.Note = fmt.Sprintf("%s refused: %s (%d loads)", what(f.Refused), Refusal(f.Why), f.Tries)
	return p
}

// sized names a point of a search over sizes.
func sized(format string) func(int) string {
	return func(n int) string { return fmt.Sprintf(format, n) }
}

// keyCompareMax bounds the key-compare search: far past the longest key
// anyone compares byte by byte, and a map value of 2×64 KiB.
const keyCompareMax = 1 << 16

// KeyCompareLimit is the most key bytes the KeyCompare loop may compare.
func KeyCompareLimit() (Probe, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 2 * keyCompareMax, MaxEntries: 1})
	if err != nil {
		return Probe{}, err
	}
	defer m.Close()
	f, err := Search(1, keyCompareMax, func(n int) error {
		_, err := Load(KeyCompare(m, keyCompareMax, int32(n)))
		return err
	})
	return probe("key-compare loop (bounded, bytewise, early exit)", "bytes", 0, f, int64(f.Best), sized("a loop over %d bytes")), err
}

// InsnLimit finds the largest program the verifier walks to the end: a
// Walk whose verified instructions straddle the limit. Its value is the
// instructions verified of the largest Walk that loads.
func InsnLimit() (Probe, error) {
	// Two small loads give the instructions walked per n, which puts the
	// search's window around the limit: every load near it walks a
	// million instructions, slow in an emulated guest.
	const n0, n1 = 10 * walkBody, 20 * walkBody
	i0, err := Load(Walk(n0))
	if err != nil {
		return Probe{}, err
	}
	i1, err := Load(Walk(n1))
	if err != nil {
		return Probe{}, err
	}
	if i1 <= i0 {
		return Probe{}, fmt.Errorf("Walk(%d) and Walk(%d) verified %d and %d instructions: the loop is not walked trip by trip", n0, n1, i0, i1)
	}
	guess := n0 + int(float64(verifier.InsnLimit-int(i0))*float64(n1-n0)/float64(i1-i0))
	insns := map[int]uint32{}
	try := func(n int) error {
		i, err := Load(Walk(n))
		insns[n] = i
		return err
	}
	f, err := Search(guess-4, guess+4, try)
	if err != nil || f.Refused == 0 {
		// The guess was off: search the whole way up from the small load.
		f, err = Search(n1, 4*guess, try)
	}
	return probe("instructions verified", "insns", verifier.InsnLimit, f, int64(insns[f.Best]), sized("a walk of %d instructions")), err
}

// stackMax bounds the stack search: 8 × MAX_BPF_STACK.
const stackMax = 8 * verifier.StackLimit

// StackLimit finds the most stack bytes a program may use.
func StackLimit() (Probe, error) {
	f, err := Search(1, stackMax, func(n int) error {
		_, err := Load(StackUse(int16(n)))
		return err
	})
	return probe("stack", "bytes", verifier.StackLimit, f, int64(f.Best), sized("a stack of %d bytes")), err
}

// TailCallDepth runs a TailCaller that tail-calls itself and returns how
// many tail calls one run made before the kernel stopped the chain.
func TailCallDepth() (Probe, error) {
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return Probe{}, err
	}
	defer counter.Close()
	progs, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return Probe{}, err
	}
	defer progs.Close()
	prog, err := ebpf.NewProgram(TailCaller(counter, progs))
	if err != nil {
		return Probe{}, err
	}
	defer prog.Close()
	if err := progs.Put(uint32(0), prog); err != nil {
		return Probe{}, err
	}
	ret, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		return Probe{}, err
	}
	if ret != uint32(xdpPass) {
		return Probe{}, fmt.Errorf("the chain returned %d, want XDP_PASS (%d)", ret, xdpPass)
	}
	var runs uint32
	if err := counter.Lookup(uint32(0), &runs); err != nil {
		return Probe{}, err
	}
	p := Probe{Limit: verifier.Limit{Name: "tail calls per run", Value: int64(runs) - 1, Unit: "calls", Bound: verifier.TailCallLimit,
		Note: fmt.Sprintf("one test run of a self tail-calling program ran %d times", runs)}}
	return p, nil
}

// StoreLimit finds the largest rung of macro's ladder on which the store
// still loads.
func StoreLimit(name, macro, unit string) (Probe, error) {
	ladder, err := kvvariants.Ladder(macro)
	if err != nil {
		return Probe{}, err
	}
	insns := map[int]uint32{}
	f, err := Search(0, len(ladder)-1, func(i int) error {
		n, err := LoadKV(ladder[i])
		insns[i] = n
		return err
	})
	p := probe(name, unit, 0, f, int64(ladder[f.Best].Value), func(i int) string { return ladder[i].String() })
	// How close the largest rung came to the instruction limit.
	p.Note = fmt.Sprintf("%s: kv_xdp verified in %d insns; %s", ladder[f.Best], insns[f.Best], p.Note)
	return p, err
}
