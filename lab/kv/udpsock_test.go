package kv

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPktinfoCmsg: a pktinfo control message built by newCmsg parses back
// (unix.ParseSocketControlMessage, then cmsgData) to the address put in,
// and only as its own level and type.
func TestPktinfoCmsg(t *testing.T) {
	a6 := netip.MustParseAddr("fd00::2")
	b, pi6 := newCmsg[unix.Inet6Pktinfo](unix.IPPROTO_IPV6, unix.IPV6_PKTINFO)
	pi6.Addr = a6.As16()
	a4 := netip.MustParseAddr("198.18.0.2")
	b4, pi4 := newCmsg[unix.Inet4Pktinfo](unix.IPPROTO_IP, unix.IP_PKTINFO)
	pi4.Addr = a4.As4()
	msgs, err := unix.ParseSocketControlMessage(append(b, b4...))
	if err != nil || len(msgs) != 2 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	if got := cmsgData[unix.Inet6Pktinfo](msgs[0], unix.IPPROTO_IPV6, unix.IPV6_PKTINFO); got == nil || netip.AddrFrom16(got.Addr) != a6 {
		t.Errorf("IPv6 pktinfo: %+v", got)
	}
	if got := cmsgData[unix.Inet4Pktinfo](msgs[1], unix.IPPROTO_IP, unix.IP_PKTINFO); got == nil || netip.AddrFrom4(got.Addr) != a4 {
		t.Errorf("IPv4 pktinfo: %+v", got)
	}
	if cmsgData[unix.Inet4Pktinfo](msgs[0], unix.IPPROTO_IP, unix.IP_PKTINFO) != nil {
		t.Error("an IPv6 pktinfo read as IPv4's")
	}
}
