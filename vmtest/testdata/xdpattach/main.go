// Command xdpattach is built by vmtest's tests (static, CGO_ENABLED=0) and
// run inside each guest: it creates a veth pair, attaches an XDP_PASS
// program in driver mode to both ends with cilium/ebpf and checks, through
// netlink, that the kernel reports it attached.
package main

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "xdpattach:", err)
		os.Exit(1)
	}
}

func run() error {
	// Kernels before 5.11 account BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "xdpt0"}, PeerName: "xdpt1"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth pair: %w", err)
	}
	defer netlink.LinkDel(veth)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "xdp_pass",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("loading program: %w", err)
	}
	defer prog.Close()
	for _, name := range []string{"xdpt0", "xdpt1"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		xl, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.Attrs().Index, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attaching to %s: %w", name, err)
		}
		defer xl.Close()
		l, err = netlink.LinkByName(name)
		if err != nil {
			return err
		}
		x := l.Attrs().Xdp
		if x == nil || !x.Attached {
			return fmt.Errorf("%s: netlink reports no XDP program after attach", name)
		}
		fmt.Printf("xdp attached: %s prog_id=%d mode=driver\n", name, x.ProgId)
	}
	return nil
}
