package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/xdplab/xdplab/lab/memcache"
)

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

const (
	ethLen  = 14
	ipv4Len = 20
	ipv6Len = 40
	udpLen  = 8
)

// Datagram describes one memcached UDP request as a full Ethernet frame, for
// running the XDP program with BPF_PROG_TEST_RUN.
type Datagram struct {
	Src, Dst       netip.AddrPort
	ID, Seq, Total uint16
	Reserved       uint16
	Payload        []byte
	NoUDPChecksum  bool
	SrcMAC, DstMAC [6]byte
}

// Frame builds the Ethernet/IP/UDP frame. Checksums are filled in.
func (d Datagram) Frame() []byte {
	v6 := d.Dst.Addr().Is6() && !d.Dst.Addr().Is4In6()
	ipl := ipv4Len
	etype := uint16(0x0800)
	if v6 {
		ipl, etype = ipv6Len, 0x86dd
	}
	total := d.Total
	if total == 0 {
		total = 1
	}
	ulen := udpLen + frameLen + len(d.Payload)
	b := make([]byte, ethLen+ipl+ulen)
	copy(b[0:6], d.DstMAC[:])
	copy(b[6:12], d.SrcMAC[:])
	binary.BigEndian.PutUint16(b[12:], etype)
	ip := b[ethLen:]
	if v6 {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(ulen))
		ip[6], ip[7] = 17, 64
		s, t := d.Src.Addr().As16(), d.Dst.Addr().As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], t[:])
	} else {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(ipv4Len+ulen))
		ip[8], ip[9] = 64, 17
		s, t := d.Src.Addr().As4(), d.Dst.Addr().As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], t[:])
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip[:ipv4Len], 0)))
	}
	u := ip[ipl:]
	binary.BigEndian.PutUint16(u[0:], d.Src.Port())
	binary.BigEndian.PutUint16(u[2:], d.Dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(ulen))
	binary.BigEndian.PutUint16(u[8:], d.ID)
	binary.BigEndian.PutUint16(u[10:], d.Seq)
	binary.BigEndian.PutUint16(u[12:], total)
	binary.BigEndian.PutUint16(u[14:], d.Reserved)
	copy(u[16:], d.Payload)
	if !d.NoUDPChecksum {
		c := ^fold(udpSum(b))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
	}
	return b
}

// ParseFrame reads a frame the XDP program produced, verifying its lengths
// and checksums, so tests catch a malformed reply as well as a wrong one.
func ParseFrame(b []byte) (Datagram, error) {
	var d Datagram
	if len(b) < ethLen {
		return d, errors.New("frame shorter than Ethernet header")
	}
	copy(d.DstMAC[:], b[0:6])
	copy(d.SrcMAC[:], b[6:12])
	var ipl int
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		ipl = ipv4Len
		if len(b) < ethLen+ipl+udpLen {
			return d, errors.New("truncated IPv4 frame")
		}
		ip := b[ethLen:]
		if fold(sum(ip[:ipv4Len], 0)) != 0xffff {
			return d, errors.New("bad IPv4 header checksum")
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != len(b)-ethLen {
			return d, fmt.Errorf("IPv4 total length %d, frame carries %d", binary.BigEndian.Uint16(ip[2:]), len(b)-ethLen)
		}
		d.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), 0)
		d.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), 0)
	case 0x86dd:
		ipl = ipv6Len
		if len(b) < ethLen+ipl+udpLen {
			return d, errors.New("truncated IPv6 frame")
		}
		ip := b[ethLen:]
		if int(binary.BigEndian.Uint16(ip[4:])) != len(b)-ethLen-ipv6Len {
			return d, errors.New("IPv6 payload length mismatch")
		}
		d.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(ip[8:24])), 0)
		d.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(ip[24:40])), 0)
	default:
		return d, errors.New("not IPv4 or IPv6")
	}
	u := b[ethLen+ipl:]
	if int(binary.BigEndian.Uint16(u[4:])) != len(u) {
		return d, fmt.Errorf("UDP length %d, datagram carries %d", binary.BigEndian.Uint16(u[4:]), len(u))
	}
	if binary.BigEndian.Uint16(u[6:]) != 0 && fold(udpSum(b)) != 0xffff {
		return d, errors.New("bad UDP checksum")
	}
	d.Src = netip.AddrPortFrom(d.Src.Addr(), binary.BigEndian.Uint16(u[0:]))
	d.Dst = netip.AddrPortFrom(d.Dst.Addr(), binary.BigEndian.Uint16(u[2:]))
	if len(u) < udpLen+frameLen {
		return d, errors.New("datagram shorter than memcached's frame header")
	}
	d.ID = binary.BigEndian.Uint16(u[8:])
	d.Seq = binary.BigEndian.Uint16(u[10:])
	d.Total = binary.BigEndian.Uint16(u[12:])
	d.Reserved = binary.BigEndian.Uint16(u[14:])
	d.Payload = u[16:]
	return d, nil
}

// udpSum is the UDP checksum sum (pseudo header + datagram) of a frame.
func udpSum(b []byte) uint32 {
	var s uint32
	var u []byte
	if binary.BigEndian.Uint16(b[12:]) == 0x86dd {
		ip := b[ethLen:]
		u = ip[ipv6Len:]
		s = sum(ip[8:40], 0)
		s += uint32(len(u)) + 17
	} else {
		ip := b[ethLen:]
		u = ip[ipv4Len:]
		s = sum(ip[12:20], 0)
		s += uint32(len(u)) + 17
	}
	return sum(u, s)
}

func sum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = (s & 0xffff) + (s >> 16)
	}
	return uint16(s)
}
