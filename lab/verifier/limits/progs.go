package limits

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/xdplab/xdplab/lab/kv"
)

// xdpPass is what every probe program returns: XDP_PASS, from the store's
// generated enum xdp_action, not retyped.
const xdpPass = int32(kv.XDPPass)

func xdp(name string, insns asm.Instructions) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Name: name, Type: ebpf.XDP, License: "GPL", Instructions: insns}
}

// lookupZero looks up key 0 of m: R0 is the value, or 0 (then the program
// jumps to "pass").
func lookupZero(m *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
	}
}

var pass = asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"), asm.Return()}

// KeyCompare compares n bytes of two keys in m's value (one at 0, one at
// half) a byte at a time, in a bounded loop that leaves at the first
// difference: the shape of a lookup's key check. m is an array with one
// value of at least 2*half bytes, and n <= half.
func KeyCompare(m *ebpf.Map, half, n int32) *ebpf.ProgramSpec {
	insns := lookupZero(m)
	insns = append(insns,
		asm.Mov.Imm(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.R0).WithSymbol("loop"),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.LoadMem(asm.R3, asm.R2, 0, asm.Byte),
		asm.Add.Imm(asm.R2, half),
		asm.LoadMem(asm.R4, asm.R2, 0, asm.Byte),
		asm.JNE.Reg(asm.R3, asm.R4, "differ"),
		asm.Add.Imm(asm.R1, 1),
		asm.JLT.Imm(asm.R1, n, "loop"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("differ"),
		asm.Return(),
	)
	return xdp("key_compare", append(insns, pass...))
}

// walkBody is the instructions in each trip of Walk's loop.
const walkBody = 256

// Walk is a program the verifier walks about n instructions of (n at least
// walkBody): a bounded loop of n/walkBody trips over walkBody instructions,
// then n%walkBody more. One more n is one more instruction walked, or three
// where a trip replaces walkBody-1 instructions after the loop. The long
// trip keeps the states few: a loop of one instruction a trip keeps one
// state per trip, which made 6.12 take a minute a load under emulation.
func Walk(n int) *ebpf.ProgramSpec {
	insns := asm.Instructions{asm.Mov.Imm(asm.R0, 0)}
	for i := range walkBody {
		insns = append(insns, asm.Mov.Imm(asm.R2, int32(i)))
	}
	insns[1] = insns[1].WithSymbol("loop")
	insns = append(insns, asm.Add.Imm(asm.R0, 1), asm.JLT.Imm(asm.R0, int32(n/walkBody), "loop"))
	for i := range n % walkBody {
		insns = append(insns, asm.Mov.Imm(asm.R2, int32(i)))
	}
	return xdp("walk", append(insns, asm.Mov.Imm(asm.R0, xdpPass), asm.Return()))
}

// StackUse writes the byte n bytes below the frame pointer: the program
// uses n bytes of stack.
func StackUse(n int16) *ebpf.ProgramSpec {
	return xdp("stack_use", asm.Instructions{
		asm.StoreImm(asm.RFP, -n, 0, asm.Byte),
		asm.Mov.Imm(asm.R0, xdpPass),
		asm.Return(),
	})
}

// TailCaller counts its runs in counter's value 0, then tail-calls slot 0
// of progs; put it there and one run chains as deep as the kernel lets it.
func TailCaller(counter, progs *ebpf.Map) *ebpf.ProgramSpec {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, lookupZero(counter)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("pass"),
		asm.LoadMapPtr(asm.R2, progs.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, xdpPass),
		asm.Return(),
	)
	return xdp("tail_caller", insns)
}

// PacketRead reads the packet's first byte, after checking it is there
// (checked) or not.
func PacketRead(checked bool) *ebpf.ProgramSpec {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // xdp_md.data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // xdp_md.data_end
	}
	if checked {
		insns = append(insns,
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 1),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		)
	}
	insns = append(insns, asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte))
	return xdp("packet_read", append(insns, pass...))
}

// Loop counts from 0 to 8 (bounded) or, its increment left out, spins on
// a condition that never changes (unbounded).
func Loop(bounded bool) *ebpf.ProgramSpec {
	insns := asm.Instructions{asm.Mov.Imm(asm.R0, 0)}
	if bounded {
		insns = append(insns, asm.Add.Imm(asm.R0, 1).WithSymbol("loop"))
	}
	cond := asm.JLT.Imm(asm.R0, 8, "loop")
	if !bounded {
		cond = cond.WithSymbol("loop")
	}
	insns = append(insns, cond, asm.Mov.Imm(asm.R0, xdpPass), asm.Return())
	return xdp("loop", insns)
}

// SpinLockMap is an array whose one value holds a bpf_spin_lock (at 0),
// described in BTF as the verifier requires.
func SpinLockMap() (*ebpf.Map, error) {
	u32 := &btf.Int{Name: "u32", Size: 4}
	lock := &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: u32}}}
	val := &btf.Struct{Name: "locked", Size: 8, Members: []btf.Member{
		{Name: "lock", Type: lock},
		{Name: "cnt", Type: u32, Offset: 32},
	}}
	return ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Key: u32, Value: val})
}

// SpinLock takes m's lock (m from SpinLockMap) and releases it (unlock)
// or leaves with it held.
func SpinLock(m *ebpf.Map, unlock bool) *ebpf.ProgramSpec {
	insns := lookupZero(m)
	insns = append(insns,
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnSpinLock.Call(),
	)
	if unlock {
		insns = append(insns, asm.Mov.Reg(asm.R1, asm.R6), asm.FnSpinUnlock.Call())
	}
	return xdp("spin_lock", append(insns, pass...))
}
