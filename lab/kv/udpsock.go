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
		if pi := cmsgData[unix.Inet6Pktinfo](m, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO); pi != nil {
			dst = netip.AddrFrom16(pi.Addr)
		} else if pi := cmsgData[unix.Inet4Pktinfo](m, unix.IPPROTO_IP, unix.IP_PKTINFO); pi != nil {
			dst = netip.AddrFrom4(pi.Addr)
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
		var pi *unix.Inet6Pktinfo
		oob, pi = newCmsg[unix.Inet6Pktinfo](unix.IPPROTO_IPV6, unix.IPV6_PKTINFO)
		pi.Addr = src.As16() // IPv4 as ::ffff:a.b.c.d, which the kernel takes for an IPv4 destination
	} else {
		var pi *unix.Inet4Pktinfo
		oob, pi = newCmsg[unix.Inet4Pktinfo](unix.IPPROTO_IP, unix.IP_PKTINFO)
		pi.Spec_dst = src.Unmap().As4()
	}
	_, _, err := r.c.WriteMsgUDP(b, oob, ua)
	return err
}

// newCmsg is one control message of level and typ carrying a T, and that
// T, zeroed, for the caller to fill in.
func newCmsg[T any](level, typ int32) ([]byte, *T) {
	n := int(unsafe.Sizeof(*new(T)))
	b := make([]byte, unix.CmsgSpace(n))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(n))
	return b, (*T)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
}

// cmsgData is m's T if m is a control message of level and typ long
// enough to carry one, else nil.
func cmsgData[T any](m unix.SocketControlMessage, level, typ int32) *T {
	if m.Header.Level != level || m.Header.Type != typ || len(m.Data) < int(unsafe.Sizeof(*new(T))) {
		return nil
	}
	return (*T)(unsafe.Pointer(&m.Data[0]))
}
