package kv

import (
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// replySocket reads datagrams with the address each was sent to and
// answers from that address. A socket bound to every address otherwise
// answers from the one the route prefers, which a client that sent to
// another address of the host (XDP answers on all of them) drops.
// (golang.org/x/net/ipv6 cannot send from an IPv4 address on a dual-stack
// socket, so the control messages are built here.)
type replySocket struct {
	c     *net.UDPConn
	level int // unix.IPPROTO_IPV6 or unix.IPPROTO_IP when it gets destinations; 0 not
	oob   []byte
}

func newReplySocket(c net.PacketConn) *replySocket {
	uc, ok := c.(*net.UDPConn)
	r := &replySocket{c: uc, oob: make([]byte, 128)}
	if ua, isUDP := c.LocalAddr().(*net.UDPAddr); !ok || !isUDP || !ua.IP.IsUnspecified() {
		return r // bound to one address: its replies come from it
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return r
	}
	rc.Control(func(fd uintptr) {
		// A dual-stack socket reports IPv4 destinations as ::ffff:a.b.c.d.
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1) == nil {
			r.level = unix.IPPROTO_IPV6
		} else if unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1) == nil {
			r.level = unix.IPPROTO_IP
		}
	})
	return r
}

// read returns a datagram, its sender and the address it was sent to
// (invalid when not known).
func (r *replySocket) read(buf []byte) (int, net.Addr, netip.Addr, error) {
	if r.level == 0 {
		n, from, err := r.c.ReadFrom(buf)
		return n, from, netip.Addr{}, err
	}
	n, oobn, _, from, err := r.c.ReadMsgUDP(buf, r.oob)
	var dst netip.Addr
	msgs, _ := unix.ParseSocketControlMessage(r.oob[:oobn])
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			dst = netip.AddrFrom16((*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0])).Addr)
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			dst = netip.AddrFrom4((*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0])).Addr)
		}
	}
	return n, from, dst, err
}

// write sends b to to, from src (as read returned it).
func (r *replySocket) write(b []byte, to net.Addr, src netip.Addr) error {
	ua, ok := to.(*net.UDPAddr)
	if r.level == 0 || !src.IsValid() || !ok {
		_, err := r.c.WriteTo(b, to)
		return err
	}
	var oob []byte
	if r.level == unix.IPPROTO_IPV6 {
		oob = make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
		pi.Addr = src.As16() // IPv4 as ::ffff:a.b.c.d, which the kernel takes for an IPv4 destination
	} else {
		oob = make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
		pi.Spec_dst = src.Unmap().As4()
	}
	_, _, err := r.c.WriteMsgUDP(b, oob, ua)
	return err
}
