package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// dgram is one memcached UDP datagram in an Ethernet frame, for test runs.
type dgram struct {
	SrcMAC, DstMAC net.HardwareAddr
	Src, Dst       netip.AddrPort
	TTL            uint8 // 64 if zero
	ID, Seq, Total uint16
	Payload        []byte // after the frame header
	NoCsum         bool   // IPv4: UDP checksum 0
}

func sum16(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold16(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// udpSum is the UDP checksum over the pseudo-header and udp (header and
// data, checksum field included).
func udpSum(src, dst netip.Addr, udp []byte) uint16 {
	var s uint32
	s = sum16(src.AsSlice(), s)
	s = sum16(dst.AsSlice(), s)
	s += 17 + uint32(len(udp))
	return fold16(sum16(udp, s))
}

func (d dgram) frame() []byte {
	ttl := d.TTL
	if ttl == 0 {
		ttl = 64
	}
	udp := make([]byte, 8, 16+len(d.Payload))
	binary.BigEndian.PutUint16(udp[0:], d.Src.Port())
	binary.BigEndian.PutUint16(udp[2:], d.Dst.Port())
	udp = binary.BigEndian.AppendUint16(udp, d.ID)
	udp = binary.BigEndian.AppendUint16(udp, d.Seq)
	udp = binary.BigEndian.AppendUint16(udp, d.Total)
	udp = append(udp, 0, 0)
	udp = append(udp, d.Payload...)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	if !(d.NoCsum && d.Src.Addr().Is4()) {
		c := udpSum(d.Src.Addr(), d.Dst.Addr(), udp)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(udp[6:], c)
	}
	f := append([]byte{}, d.DstMAC...)
	f = append(f, d.SrcMAC...)
	if d.Src.Addr().Is4() {
		f = append(f, 0x08, 0x00)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		ip[8], ip[9] = ttl, 17
		s, t := d.Src.Addr().As4(), d.Dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], t[:])
		binary.BigEndian.PutUint16(ip[10:], fold16(sum16(ip, 0)))
		f = append(f, ip...)
	} else {
		f = append(f, 0x86, 0xdd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
		ip[6], ip[7] = 17, ttl
		s, t := d.Src.Addr().As16(), d.Dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], t[:])
		f = append(f, ip...)
	}
	return append(f, udp...)
}

// parseFrame reads a frame back, checking both checksums and the lengths.
func parseFrame(f []byte) (dgram, error) {
	var d dgram
	if len(f) < 14 {
		return d, errors.New("short frame")
	}
	d.DstMAC, d.SrcMAC = net.HardwareAddr(f[0:6]), net.HardwareAddr(f[6:12])
	var src, dst netip.Addr
	var udp []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		ip := f[14:]
		if len(ip) < 20 || ip[0] != 0x45 || ip[9] != 17 {
			return d, errors.New("not IPv4 UDP")
		}
		if fold16(sum16(ip[:20], 0)) != 0 {
			return d, errors.New("bad IPv4 header checksum")
		}
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if tot > len(ip) {
			return d, errors.New("IPv4 total length beyond the frame")
		}
		d.TTL = ip[8]
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[20:tot]
	case 0x86dd:
		ip := f[14:]
		if len(ip) < 40 || ip[6] != 17 {
			return d, errors.New("not IPv6 UDP")
		}
		pl := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+pl > len(ip) {
			return d, errors.New("IPv6 payload length beyond the frame")
		}
		d.TTL = ip[7]
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		udp = ip[40 : 40+pl]
	default:
		return d, errors.New("not IP")
	}
	if len(udp) < 16 || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return d, fmt.Errorf("UDP length %d for %d bytes", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	if c := binary.BigEndian.Uint16(udp[6:]); c != 0 || src.Is6() {
		if udpSum(src, dst, udp) != 0 {
			return d, errors.New("bad UDP checksum")
		}
	} else {
		d.NoCsum = true
	}
	d.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:]))
	d.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:]))
	d.ID, d.Seq, d.Total = binary.BigEndian.Uint16(udp[8:]), binary.BigEndian.Uint16(udp[10:]), binary.BigEndian.Uint16(udp[12:])
	d.Payload = udp[16:]
	return d, nil
}
