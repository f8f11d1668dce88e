// Package frametest holds the malformed frames the XDP programs' tests
// share (bpf/include/frame.h is the rule they test): each turns a good
// Ethernet + IPv4/IPv6 (no options) + UDP frame into one the kernel would
// not take as this host's, so a program must pass it untouched.
package frametest

import (
	"bytes"
	"encoding/binary"
)

// Offsets in an Ethernet frame carrying IPv4 without options or IPv6.
const (
	eth     = 14
	v4Len   = eth + 2  // IPv4 total length
	v4Sum   = eth + 10 // IPv4 header checksum
	v4UDP   = eth + 20
	v6Len   = eth + 4 // IPv6 payload length
	udpLen  = 4       // in the UDP header
	v4Hdr   = 20
	version = eth
)

// Mutation spoils a frame in place.
type Mutation struct {
	Name  string
	Apply func(frame []byte)
}

func add16(f []byte, at, d int) {
	binary.BigEndian.PutUint16(f[at:], uint16(int(binary.BigEndian.Uint16(f[at:]))+d))
}

// FixIPv4Sum rewrites an IPv4 frame's header checksum.
func FixIPv4Sum(f []byte) {
	h := f[eth : eth+v4Hdr]
	h[10], h[11] = 0, 0
	var s uint32
	for i := 0; i < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(s))
}

// Malformed is every way a frame of the family is spoiled.
func Malformed(v6 bool) []Mutation {
	ms := []Mutation{
		{"multicast destination", func(f []byte) { copy(f, []byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}) }},
		{"broadcast destination", func(f []byte) { copy(f, bytes.Repeat([]byte{0xff}, 6)) }},
	}
	if v6 {
		return append(ms,
			Mutation{"IP version 4 in an IPv6 frame", func(f []byte) { f[version] = 0x40 }},
			Mutation{"IPv6 payload length beyond the frame", func(f []byte) { add16(f, v6Len, 4) }},
			Mutation{"UDP length beyond the IPv6 payload", func(f []byte) { add16(f, v6Len, -4) }},
		)
	}
	return append(ms,
		Mutation{"IP version 6 in an IPv4 frame", func(f []byte) { f[version] = 0x65; FixIPv4Sum(f) }},
		Mutation{"bad IPv4 header checksum", func(f []byte) { f[v4Sum] ^= 0x40 }},
		Mutation{"IPv4 total length beyond the frame", func(f []byte) { add16(f, v4Len, 4); FixIPv4Sum(f) }},
		Mutation{"IPv4 total length below the header", func(f []byte) { binary.BigEndian.PutUint16(f[v4Len:], 16); FixIPv4Sum(f) }},
		Mutation{"UDP length beyond the IPv4 payload", func(f []byte) { add16(f, v4Len, -4); FixIPv4Sum(f) }},
		Mutation{"UDP length below its header", func(f []byte) { binary.BigEndian.PutUint16(f[v4UDP+udpLen:], 4) }},
	)
}
