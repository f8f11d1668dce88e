// Package frame builds and reads the Ethernet frames the XDP programs take
// and emit: one memcached datagram (memcached's 8-byte frame header, from
// lab/memcache, then the payload) over UDP, over IPv4 without options or
// IPv6. It is the one frame builder of the lab: the programs' tests, the
// workshop's checker and the store's slow path (its BPF_PROG_TEST_RUN
// inputs) all build and parse their frames here. Parse checks every length
// and checksum, so a malformed frame out of a program fails as surely as a
// wrong one; Malformed lists the ways to spoil a good frame.
package frame

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/xdplab/xdplab/lab/memcache"
)

// Header lengths: Ethernet, IPv4 without options, IPv6, UDP.
const (
	EthLen  = 14
	IPv4Len = 20
	IPv6Len = 40
	UDPLen  = 8
)

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	protoUDP  = 17
)

// Datagram is one memcached UDP datagram in an Ethernet frame.
type Datagram struct {
	SrcMAC, DstMAC net.HardwareAddr // all zero if nil
	Src, Dst       netip.AddrPort   // IPv6 when Dst is an IPv6 address (not v4-mapped)
	TTL            uint8            // IPv4 TTL or IPv6 hop limit; Frame: 64 if zero
	ID, Seq, Total uint16           // memcached's frame header; Frame: Total 1 if zero
	Reserved       uint16
	Payload        []byte // after the frame header
	NoUDPChecksum  bool   // a UDP checksum of 0, "none" (legal for IPv4 only)
}

// IPv6 reports whether d goes over IPv6.
func (d Datagram) IPv6() bool {
	return d.Dst.Addr().Is6() && !d.Dst.Addr().Is4In6()
}

// Frame builds the Ethernet/IP/UDP frame, checksums filled in.
func (d Datagram) Frame() []byte {
	v6 := d.IPv6()
	ipl, etype := IPv4Len, uint16(etherIPv4)
	if v6 {
		ipl, etype = IPv6Len, etherIPv6
	}
	ttl := cmp.Or(d.TTL, 64)
	ulen := UDPLen + memcache.HeaderLen + len(d.Payload)
	b := make([]byte, EthLen+ipl+UDPLen, EthLen+ipl+ulen)
	copy(b[0:6], d.DstMAC)
	copy(b[6:12], d.SrcMAC)
	binary.BigEndian.PutUint16(b[12:], etype)
	ip := b[EthLen:]
	if v6 {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(ulen))
		ip[6], ip[7] = protoUDP, ttl
		s, t := d.Src.Addr().As16(), d.Dst.Addr().As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], t[:])
	} else {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(IPv4Len+ulen))
		ip[8], ip[9] = ttl, protoUDP
		s, t := d.Src.Addr().As4(), d.Dst.Addr().As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], t[:])
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip[:IPv4Len], 0)))
	}
	u := ip[ipl:]
	binary.BigEndian.PutUint16(u[0:], d.Src.Port())
	binary.BigEndian.PutUint16(u[2:], d.Dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(ulen))
	b = memcache.AppendHeader(b, memcache.Header{RequestID: d.ID, Seq: d.Seq, Total: cmp.Or(d.Total, 1), Reserved: d.Reserved})
	b = append(b, d.Payload...)
	if !d.NoUDPChecksum {
		c := ^fold(udpSum(b, v6))
		if c == 0 {
			c = 0xffff // 0 says "no checksum"
		}
		binary.BigEndian.PutUint16(b[EthLen+ipl+6:], c)
	}
	return b
}

// Parse reads a frame, checking that it is IPv4 (no options) or IPv6 UDP
// with a memcached frame header, that every length matches the frame's
// (no bytes after the datagram), and both checksums. The MACs and the
// payload alias b.
func Parse(b []byte) (Datagram, error) {
	var d Datagram
	if len(b) < EthLen {
		return d, errors.New("frame shorter than an Ethernet header")
	}
	d.DstMAC, d.SrcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	var v6 bool
	var src, dst netip.Addr
	ip := b[EthLen:]
	switch binary.BigEndian.Uint16(b[12:]) {
	case etherIPv4:
		if len(ip) < IPv4Len+UDPLen {
			return d, errors.New("truncated IPv4 frame")
		}
		if ip[0] != 0x45 || ip[9] != protoUDP {
			return d, fmt.Errorf("not IPv4 UDP without options (version/IHL %#x, protocol %d)", ip[0], ip[9])
		}
		if fold(sum(ip[:IPv4Len], 0)) != 0xffff {
			return d, errors.New("bad IPv4 header checksum")
		}
		if n := int(binary.BigEndian.Uint16(ip[2:])); n != len(ip) {
			return d, fmt.Errorf("IPv4 total length %d, frame carries %d", n, len(ip))
		}
		d.TTL = ip[8]
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		ip = ip[IPv4Len:]
	case etherIPv6:
		v6 = true
		if len(ip) < IPv6Len+UDPLen {
			return d, errors.New("truncated IPv6 frame")
		}
		if ip[0]>>4 != 6 || ip[6] != protoUDP {
			return d, fmt.Errorf("not IPv6 UDP (version %d, next header %d)", ip[0]>>4, ip[6])
		}
		if n := int(binary.BigEndian.Uint16(ip[4:])); n != len(ip)-IPv6Len {
			return d, fmt.Errorf("IPv6 payload length %d, frame carries %d", n, len(ip)-IPv6Len)
		}
		d.TTL = ip[7]
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		ip = ip[IPv6Len:]
	default:
		return d, errors.New("not IPv4 or IPv6")
	}
	u := ip
	if n := int(binary.BigEndian.Uint16(u[4:])); n != len(u) {
		return d, fmt.Errorf("UDP length %d, datagram carries %d", n, len(u))
	}
	switch {
	case binary.BigEndian.Uint16(u[6:]) != 0:
		if fold(udpSum(b, v6)) != 0xffff {
			return d, errors.New("bad UDP checksum")
		}
	case v6:
		return d, errors.New("IPv6 datagram without a UDP checksum")
	default:
		d.NoUDPChecksum = true
	}
	d.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(u[0:]))
	d.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:]))
	h, err := memcache.ParseHeader(u[UDPLen:])
	if err != nil {
		return d, errors.New("datagram shorter than memcached's frame header")
	}
	d.ID, d.Seq, d.Total, d.Reserved = h.RequestID, h.Seq, h.Total, h.Reserved
	d.Payload = u[UDPLen+memcache.HeaderLen:]
	return d, nil
}

// udpSum is the sum over the UDP pseudo header and datagram of a frame
// whose IP header has no options.
func udpSum(b []byte, v6 bool) uint32 {
	ip := b[EthLen:]
	var s uint32
	var u []byte
	if v6 {
		u = ip[IPv6Len:]
		s = sum(ip[8:40], 0)
	} else {
		u = ip[IPv4Len:]
		s = sum(ip[12:20], 0)
	}
	return sum(u, s+uint32(len(u))+protoUDP)
}

// sum adds b to s as big-endian 16-bit words (the Internet checksum's sum).
func sum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// fold folds the carries of s into 16 bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
