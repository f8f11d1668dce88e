// Package bpfload turns the ways loading BPF objects fails into one line a
// person can act on; the store and the proxy share it.
package bpfload

import (
	"errors"
	"fmt"
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
