package kv

import "github.com/xdplab/xdplab/lab/memcache"

// frameLen is memcached's UDP frame header: request id, sequence number,
// datagram count, reserved.
const frameLen = memcache.HeaderLen

// XDP actions (enum xdp_action), as Run returns them, and PAYLOAD_MAX of
// bpf/include/pkt.h: the largest payload XDP takes. Generated from the
// program's BTF (kv_bpfel.go), not retyped.
const (
	xdpDrop    = uint32(kvXdpActionXDP_DROP)
	xdpPass    = uint32(kvXdpActionXDP_PASS)
	xdpTX      = uint32(kvXdpActionXDP_TX)
	payloadMax = int(kvKvLimitKV_LIMIT_PAYLOAD_MAX)
)

// XDPPass is XDP_PASS from the same generated enum, for programs built in
// Go that must answer as the store does (lab/verifier/limits' probes).
const XDPPass = xdpPass
