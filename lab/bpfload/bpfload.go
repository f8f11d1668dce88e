// Package bpfload turns the ways loading BPF objects fails into one line a
// person can act on; the store and the proxy share it.
package bpfload

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Explain wraps a load error of the named object (e.g. "store"):
// permission problems name the fix, verifier rejections keep the log's last
// lines, where the reason is, and what they usually mean (Causes).
func Explain(what string, err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("loading BPF needs root (or CAP_BPF+CAP_NET_ADMIN): %w", err)
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("verifier rejected the %s: %v\n  %s%s", what, ve.Cause,
			strings.Join(lastLines(ve.Log, 8), "\n  "), formatCauses(ve.Log))
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// Options are what the programs load with: a statistics-only verifier log,
// which costs next to nothing and is where kernels before 5.16 report the
// instructions the verifier walked (their program info lacks the count).
func Options() *ebpf.CollectionOptions {
	return &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}}
}

var processedRE = regexp.MustCompile(`processed (\d+) insns`)

// VerifiedInsns is how many instructions the verifier walked for p (loaded
// with Options): from the program info, else from the log's statistics.
func VerifiedInsns(p *ebpf.Program) (uint32, error) {
	info, err := p.Info()
	if err != nil {
		return 0, err
	}
	if n, ok := info.VerifiedInstructions(); ok && n > 0 {
		return n, nil
	}
	if m := processedRE.FindStringSubmatch(p.VerifierLog); m != nil {
		n, err := strconv.ParseUint(m[1], 10, 32)
		return uint32(n), err
	}
	return 0, fmt.Errorf("no verifier statistics for %s (log %q)", p, p.VerifierLog)
}

// ProgramStats is what the verifier did with one loaded program, in one
// shape for every package's verifier test and the matrix report. The
// statistics come from the stats-level verifier log (as veristat reads it);
// kernels print what they know (5.10 has no states counts, for one).
type ProgramStats struct {
	Program string `json:"program"`
	// Config names the load configuration, where a program loads in
	// several (the store's value slot sizes).
	Config           string `json:"config,omitempty"`
	VerifiedInsn     uint32 `json:"verified_insns"`
	TotalStates      int    `json:"total_states,omitempty"`
	PeakStates       int    `json:"peak_states,omitempty"`
	MaxStatesPerInsn int    `json:"max_states_per_insn,omitempty"`
	StackDepth       string `json:"stack_depth,omitempty"` // per subprogram: "56+8+88"
	VerifyMicros     int64  `json:"verification_us,omitempty"`
	XlatedBytes      int    `json:"xlated_bytes"`
	JitedBytes       uint32 `json:"jited_bytes"`
}

func (s ProgramStats) String() string {
	c := ""
	if s.Config != "" {
		c = " (" + s.Config + ")"
	}
	return fmt.Sprintf("%s%s: %d instructions verified in %d µs, %d states (peak %d), stack %s, %d bytes translated, %d bytes JITed",
		s.Program, c, s.VerifiedInsn, s.VerifyMicros, s.TotalStates, s.PeakStates, s.StackDepth, s.XlatedBytes, s.JitedBytes)
}

var (
	statsIntRE = regexp.MustCompile(`(verification time|max_states_per_insn|total_states|peak_states) (\d+)`)
	stackRE    = regexp.MustCompile(`stack depth ([0-9+]+)`)
)

// Stats reads p's verifier statistics (p loaded with Options).
func Stats(name, config string, p *ebpf.Program) (ProgramStats, error) {
	st := ProgramStats{Program: name, Config: config}
	info, err := p.Info()
	if err != nil {
		return st, err
	}
	st.XlatedBytes, _ = info.TranslatedSize()
	st.JitedBytes, _ = info.JitedSize()
	for _, m := range statsIntRE.FindAllStringSubmatch(p.VerifierLog, -1) {
		n, _ := strconv.Atoi(m[2])
		switch m[1] {
		case "verification time":
			st.VerifyMicros = int64(n)
		case "max_states_per_insn":
			st.MaxStatesPerInsn = n
		case "total_states":
			st.TotalStates = n
		case "peak_states":
			st.PeakStates = n
		}
	}
	if m := stackRE.FindStringSubmatch(p.VerifierLog); m != nil {
		st.StackDepth = m[1]
	}
	st.VerifiedInsn, err = VerifiedInsns(p)
	return st, err
}
