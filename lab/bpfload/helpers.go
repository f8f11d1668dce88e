package bpfload

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// HaveXDPBytes reports whether XDP programs may call bpf_xdp_load_bytes
// and bpf_xdp_store_bytes (5.18+), with which the programs copy a payload
// in one call instead of a loop (bpf/include/pkt.h, pkt_copy_ctx). A
// missing helper is false; a probe that fails otherwise is an error.
func HaveXDPBytes() (bool, error) {
	for _, fn := range []asm.BuiltinFunc{asm.FnXdpLoadBytes, asm.FnXdpStoreBytes} {
		switch err := features.HaveProgramHelper(ebpf.XDP, fn); {
		case errors.Is(err, ebpf.ErrNotSupported):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("probe %s: %w", fn, err)
		}
	}
	return true, nil
}

// Uint8 is 1 for true, the way the programs' load-time flags take it.
func Uint8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
