package kv

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Attach modes.
const (
	ModeNative  = "native"  // driver mode: the fast path, and what veth needs for XDP_TX
	ModeGeneric = "generic" // skb mode: works on any device, slower
	ModeAuto    = "auto"    // native, else generic
)

// Attach puts the store on the device named dev in the calling thread's
// network namespace and returns the attachment; closing it detaches.
func (o *Objects) Attach(dev, mode string) (link.Link, string, error) {
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, "", fmt.Errorf("no network interface %q here (see `ip link`): %w", dev, err)
	}
	if ifc.Flags&net.FlagLoopback != 0 {
		// XDP tells the slow path's own runs by their arrival on loopback.
		return nil, "", fmt.Errorf("the store serves on a network device, not on loopback %s: its slow path owns that path into XDP", dev)
	}
	try := func(flags link.XDPAttachFlags) (link.Link, error) {
		return link.AttachXDP(link.XDPOptions{Program: o.objs.KvXdp, Interface: ifc.Index, Flags: flags})
	}
	var l link.Link
	switch mode {
	case ModeNative, "":
		l, err = try(link.XDPDriverMode)
		mode = ModeNative
	case ModeGeneric:
		l, err = try(link.XDPGenericMode)
	case ModeAuto:
		if l, err = try(link.XDPDriverMode); err == nil {
			mode = ModeNative
		} else {
			l, err = try(link.XDPGenericMode)
			mode = ModeGeneric
		}
	default:
		return nil, "", fmt.Errorf("unknown XDP mode %q: use native, generic or auto", mode)
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return nil, "", fmt.Errorf("%s already has an XDP program (remove it with `ip link set dev %s xdp off`): %w", dev, dev, err)
		}
		if errors.Is(err, unix.EPERM) {
			return nil, "", fmt.Errorf("attaching XDP needs root: %w", err)
		}
		return nil, "", fmt.Errorf("attach XDP (%s mode) to %s: %w", mode, dev, err)
	}
	return l, mode, nil
}
