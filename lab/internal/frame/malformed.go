package frame

import (
	"bytes"
	"encoding/binary"
)

// Offsets of the fields the mutations spoil, in a frame carrying IPv4
// without options or IPv6.
const (
	version = EthLen
	v4Len   = EthLen + 2  // IPv4 total length
	v4Sum   = EthLen + 10 // IPv4 header checksum
	v4UDP   = EthLen + IPv4Len
	v6Len   = EthLen + 4 // IPv6 payload length
	udpLen  = 4          // in the UDP header
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
	h := f[EthLen : EthLen+IPv4Len]
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^fold(sum(h, 0)))
}

// Malformed is every way a good frame of the family is spoiled into one
// the kernel would not take as this host's (bpf/include/frame.h is the
// rule), so a program must pass it untouched.
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
