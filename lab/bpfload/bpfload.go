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
// lines, where the reason is.
func Explain(what string, err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("loading BPF needs root (or CAP_BPF+CAP_NET_ADMIN): %w", err)
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := ve.Log
		if len(log) > 8 {
			log = log[len(log)-8:]
		}
		return fmt.Errorf("verifier rejected the %s: %v\n  %s", what, ve.Cause, strings.Join(log, "\n  "))
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
