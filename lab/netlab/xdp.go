package netlab

import (
	"fmt"
	"io"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var memlockOnce sync.Once

// RemoveMemlock lifts RLIMIT_MEMLOCK once per process; kernels before 5.11
// charge BPF maps and programs to it.
func RemoveMemlock() {
	memlockOnce.Do(func() { _ = rlimit.RemoveMemlock() })
}

// AttachXDPPass attaches a program that returns XDP_PASS to dev on host,
// in native (driver) mode. A veth only delivers XDP_TX and XDP_REDIRECT
// frames coming from its peer when it has an XDP program itself. It
// attaches through netlink rather than a BPF link, so the program stays
// after this process exits, as a detached topology (`lab up`) needs; it
// goes with the device. It fails if dev already has a native XDP program.
// Closing the result detaches the program.
func AttachXDPPass(h *Host, dev string) (io.Closer, error) {
	if err := h.Do(func() error { return PutXDPPass(dev) }); err != nil {
		return nil, fmt.Errorf("netlab: attach XDP_PASS to %s on %s: %w", dev, h.Name, err)
	}
	return &xdpPass{h: h, dev: dev}, nil
}

// xdpPassName is the placeholder program's name, by which TakeXDPPass
// recognises it.
const xdpPassName = "xdp_pass"

// PutXDPPass is AttachXDPPass for dev in the calling thread's namespace,
// without a closer: the program stays until the device goes or someone
// removes it.
func PutXDPPass(dev string) error {
	RemoveMemlock()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    xdpPassName,
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("load XDP_PASS: %w", err)
	}
	defer prog.Close() // the device keeps its own reference
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return err
	}
	return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), unix.XDP_FLAGS_DRV_MODE|unix.XDP_FLAGS_UPDATE_IF_NOEXIST)
}

// TakeXDPPass removes the placeholder XDP_PASS program from dev in the
// calling thread's namespace, if that is what dev carries, so a real program
// can take its place. It reports whether it removed one; put it back with
// PutXDPPass when the real program goes, or XDP_TX and XDP_REDIRECT from
// the peer stop delivering.
func TakeXDPPass(dev string) (bool, error) {
	l, has, err := xdpPassOn(dev)
	if !has || err != nil {
		return false, err
	}
	return true, netlink.LinkSetXdpFdWithFlags(l, -1, unix.XDP_FLAGS_DRV_MODE)
}

// HasXDPPass reports whether dev, in the calling thread's namespace,
// carries the placeholder XDP_PASS program: whether a server that took its
// place has put it back.
func HasXDPPass(dev string) (bool, error) {
	_, has, err := xdpPassOn(dev)
	return has, err
}

func xdpPassOn(dev string) (netlink.Link, bool, error) {
	l, name, err := xdpOn(dev)
	return l, name == xdpPassName, err
}

// XDPProgram names the XDP program dev carries in the calling thread's
// namespace: "" for none, PlaceholderName for the placeholder.
func XDPProgram(dev string) (string, error) {
	_, name, err := xdpOn(dev)
	return name, err
}

// PlaceholderName is what XDPProgram calls the placeholder XDP_PASS.
const PlaceholderName = xdpPassName

func xdpOn(dev string) (netlink.Link, string, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, "", err
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return l, "", nil
	}
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		return l, "", err
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return l, "", err
	}
	return l, info.Name, nil
}

type xdpPass struct {
	h    *Host
	dev  string
	once sync.Once
}

func (x *xdpPass) Close() error {
	var err error
	x.once.Do(func() {
		if !x.h.ns.IsOpen() {
			return // the topology, and the device with it, is gone
		}
		err = x.h.Do(func() error {
			l, err := netlink.LinkByName(x.dev)
			if err != nil {
				return nil // the device, and the program with it, is gone
			}
			return netlink.LinkSetXdpFdWithFlags(l, -1, unix.XDP_FLAGS_DRV_MODE)
		})
	})
	if err != nil {
		return fmt.Errorf("netlab: detach XDP_PASS from %s on %s: %w", x.dev, x.h.Name, err)
	}
	return nil
}

// AttachXDP attaches prog to dev on host in native (driver) mode and
// returns the link; closing it detaches the program.
func AttachXDP(h *Host, dev string, prog *ebpf.Program) (link.Link, error) {
	var l link.Link
	err := h.Do(func() error {
		// Interface indexes are per namespace, so look it up in there.
		nl, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{
			Program:   prog,
			Interface: nl.Attrs().Index,
			Flags:     link.XDPDriverMode,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: attach XDP to %s on %s: %w", dev, h.Name, err)
	}
	return l, nil
}
