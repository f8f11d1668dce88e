// Package limits finds the verifier's limits on the running kernel by
// search with the real verifier, not by assumption: how many key bytes a
// bounded loop may compare, how deep tail calls chain, how much stack and
// how many verified instructions a program may use, and the largest sizes of
// the store (keys per GET, value slot, key length) that still load. It also
// builds programs the verifier must refuse. The programs are made with
// cilium/ebpf/asm (the store's variants are compiled C, see kvvariants), so
// nothing is compiled in the guests.
//
// Its tests (TestLimits, TestMustReject) run on every kernel of the matrix
// and record the limits for its report (testutils.RecordLimits).
package limits

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/verifier/limits/kvvariants"
)

// Found is what a search found.
type Found struct {
	Best    int   // the largest n accepted
	Refused int   // the smallest n refused; 0 when the whole range loaded
	Why     error // why Refused was refused
	Tries   int   // loads the search took
}

// Search finds the largest n in [lo, hi] that try accepts (returns nil
// for), by bisection: try must accept every n up to some limit and refuse
// every n past it. It checks both ends: lo must be accepted, and if hi is
// accepted too the result says nothing was refused.
func Search(lo, hi int, try func(n int) error) (Found, error) {
	f := Found{}
	attempt := func(n int) error { f.Tries++; return try(n) }
	if err := attempt(lo); err != nil {
		return f, fmt.Errorf("the search's low end %d is refused: %w", lo, err)
	}
	if err := attempt(hi); err == nil {
		f.Best = hi
		return f, nil
	} else {
		f.Refused, f.Why = hi, err
	}
	for f.Best = lo; f.Refused-f.Best > 1; {
		mid := f.Best + (f.Refused-f.Best)/2
		if err := attempt(mid); err != nil {
			f.Refused, f.Why = mid, err
		} else {
			f.Best = mid
		}
	}
	return f, nil
}

// Load loads one program with a statistics-level verifier log and returns
// how many instructions the verifier walked, or the refusal.
func Load(spec *ebpf.ProgramSpec) (uint32, error) {
	p, err := ebpf.NewProgramWithOptions(spec, bpfload.Options().Programs)
	if err != nil {
		return 0, bpfload.WithLog(spec, err)
	}
	defer p.Close()
	return bpfload.VerifiedInsns(p)
}

// Refusal is the verifier's own words for a refused load: the log's last
// lines that say why, or the error.
func Refusal(err error) string {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var keep []string
	for _, l := range ve.Log {
		l = strings.TrimSpace(l)
		if l != "" && !statsLineRE.MatchString(l) {
			keep = append(keep, l)
		}
	}
	if len(keep) > 2 {
		keep = keep[len(keep)-2:]
	}
	if len(keep) == 0 {
		return ve.Cause.Error()
	}
	return strings.Join(keep, " / ")
}

// statsLineRE matches what a refusal's log holds beside the reason: the
// statistics, and the states an infinite loop was found between.
var statsLineRE = regexp.MustCompile(`^(processed \d+ insns|insns processed|verification time|stack depth|cur state:|old state:)`)

var processedRE = regexp.MustCompile(`(?i)processed (\d+) insn`)

// Processed is the instruction count a refusal's log reports ("BPF
// program is too large. Processed 1000001 insn"), or 0.
func Processed(err error) int {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return 0
	}
	for i := len(ve.Log) - 1; i >= 0; i-- {
		if m := processedRE.FindStringSubmatch(ve.Log[i]); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return 0
}

// LoadKV loads a variant of the store as lab/kv loads the shipped one (the
// clock the kernel has, a slow path token set; a value slot variant at its
// full size, the others at the object's default slot) but with a small map,
// and returns the instructions the verifier walked for kv_xdp.
func LoadKV(v kvvariants.Variant) (uint32, error) {
	st, err := LoadKVStats(v, "")
	return st.VerifiedInsn, err
}

// LoadKVStats is LoadKV returning all of kv_xdp's verifier statistics,
// named config as lab/kv's verifier test names its load configurations.
func LoadKVStats(v kvvariants.Variant, config string) (bpfload.ProgramStats, error) {
	st := bpfload.ProgramStats{Program: "kv_xdp", Config: config}
	spec, err := v.Spec()
	if err != nil {
		return st, err
	}
	// The compiled value size is the slot's maximum; a handful of entries
	// keeps the largest slots from allocating much.
	spec.Maps["kv"].MaxEntries = 16
	coarse := uint8(0)
	switch err := features.HaveProgramHelper(ebpf.XDP, asm.FnKtimeGetCoarseNs); {
	case err == nil:
		coarse = 1
	case !errors.Is(err, ebpf.ErrNotSupported):
		return st, err
	}
	vars := map[string]any{"coarse_clock": coarse, "slow_token": uint16(1)}
	if v.Macro == "KV_VAL_MAX" {
		vars["val_cap"] = uint32(v.Value)
	}
	for name, val := range vars {
		if err := spec.Variables[name].Set(val); err != nil {
			return st, fmt.Errorf("set %s: %w", name, err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, *bpfload.Options())
	if err != nil {
		return st, err
	}
	defer coll.Close()
	return bpfload.Stats(st.Program, config, coll.Programs["kv_xdp"])
}
