// Package rerun times an XDP program that rewrites its packet (the store's
// reply built in place, the proxy's rewritten addresses) warm, through
// BPF_PROG_TEST_RUN with a large Repeat: a harness program (bpf/rerun.bpf.c)
// puts the request back before each run and tail-calls the program under
// test; the same harness tail-calling a trivial program times the harness,
// which is subtracted. For benchmarks only; needs 5.18+ (the harness's
// helpers), where a Repeat-1 run is all older kernels can time.
//
// Why not BPF_F_TEST_XDP_LIVE_FRAMES: in live mode the kernel resets only a
// frame's pointers between repetitions, not its bytes (pages are recycled
// as the program left them: Documentation/bpf/bpf_prog_run.rst), so a
// program rewriting its request would still meet its own reply, and XDP_TX
// becomes a real transmit whose cost would be timed too.
package rerun

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package rerun rerun ../../../bpf/rerun.bpf.c -- -O2 -g -Wall -Werror -I../../../bpf/include -I/usr/include/x86_64-linux-gnu

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// frameMax is FRAME_MAX in bpf/rerun.bpf.c.
const frameMax = 2048

// Harness is the loaded harness.
type Harness struct {
	objs rerunObjects
}

// Load loads the harness.
func Load() (*Harness, error) {
	h := &Harness{}
	if err := loadRerunObjects(&h.objs, nil); err != nil {
		return nil, fmt.Errorf("load the rerun harness: %w", err)
	}
	return h, nil
}

// Close releases the harness.
func (h *Harness) Close() error { return h.objs.Close() }

// Result is one timing.
type Result struct {
	Ret uint32 // the program's action on the last run
	// PerRun is the kernel's time per run of harness + program;
	// Harness that of harness + trivial program, in the same call pattern.
	PerRun, Harness time.Duration
}

// Net is the program's own time per run: PerRun less the harness's.
func (r Result) Net() time.Duration { return r.PerRun - r.Harness }

// Time runs frame through prog repeat times in one BPF_PROG_TEST_RUN, then
// through the trivial program as many times, and returns both per-run times.
func (h *Harness) Time(prog *ebpf.Program, frame []byte, repeat int) (Result, error) {
	var r Result
	ret, d, err := h.run(prog, frame, repeat)
	if err != nil {
		return r, err
	}
	_, base, err := h.run(h.objs.Trivial, frame, repeat)
	if err != nil {
		return r, err
	}
	return Result{Ret: ret, PerRun: d, Harness: base}, nil
}

func (h *Harness) run(prog *ebpf.Program, frame []byte, repeat int) (uint32, time.Duration, error) {
	if len(frame) < 14 || len(frame) > frameMax {
		return 0, 0, fmt.Errorf("frame of %d bytes: want 14..%d", len(frame), frameMax)
	}
	val := make([]byte, 4+frameMax)
	binary.NativeEndian.PutUint32(val, uint32(len(frame)))
	copy(val[4:], frame)
	if err := h.objs.Frame.Put(uint32(0), val); err != nil {
		return 0, 0, err
	}
	if err := h.objs.Target.Put(uint32(0), prog); err != nil {
		return 0, 0, fmt.Errorf("put the program under test: %w", err)
	}
	ret, d, err := h.objs.Rerun.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, 0, err
	}
	if ret == 0 { // XDP_ABORTED: the harness failed, or the program did
		return 0, 0, fmt.Errorf("XDP_ABORTED (the harness could not restore the frame, or the program aborted)")
	}
	return ret, d, nil
}

// Runs and Calls are what Warm does: Calls calls of Runs repeats each.
const (
	Runs  = 20000
	Calls = 5
)

// Warm loads a harness, times frame through prog Calls times (Runs repeats
// each), checks the action against want, and returns the medians of the
// program's own time per run and of the harness's.
func Warm(prog *ebpf.Program, frame []byte, want uint32) (net, harness time.Duration, err error) {
	h, err := Load()
	if err != nil {
		return 0, 0, err
	}
	defer h.Close()
	var nets, hs []time.Duration
	for range Calls {
		r, err := h.Time(prog, frame, Runs)
		if err != nil {
			return 0, 0, err
		}
		if r.Ret != want {
			return 0, 0, fmt.Errorf("action %d, want %d", r.Ret, want)
		}
		nets = append(nets, r.Net())
		hs = append(hs, r.Harness)
	}
	return median(nets), median(hs), nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
