package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Open attaches to a topology that New built from the same spec earlier,
// usually in another process (a detached `lab up`), and reads its
// interfaces back from the kernel. The spec supplies what the kernel does
// not keep (roles, which host is which); Open checks that every host's
// namespace and every link exist with the names and addresses New gives
// them, and fails, naming the first thing missing, if any do not. Use
// Detach to let go of the result without removing anything, or Close to
// remove the topology.
func Open(spec Spec) (*Topology, error) {
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("netlab: open: %w", err)
	}
	t := &Topology{Prefix: spec.Prefix}
	if err := t.open(spec); err != nil {
		t.Detach()
		return nil, fmt.Errorf("netlab: open %s: %w", spec.Prefix, err)
	}
	return t, nil
}

func (t *Topology) open(spec Spec) error {
	byName := map[string]*Host{}
	for _, hs := range spec.Hosts {
		h := &Host{Name: hs.Name, Role: hs.Role, NetNS: spec.Prefix + "-" + hs.Name, ns: netns.None()}
		ns, err := netns.GetFromPath(h.Path())
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("host %s: no namespace %s", h.Name, h.NetNS)
			}
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		h.ns = ns
		t.Hosts = append(t.Hosts, h)
		byName[h.Name] = h
	}
	// Recreate each link's names and addresses exactly as addLink chose
	// them, then look for them.
	for n, ls := range spec.Links {
		a, b := byName[ls.A], byName[ls.B]
		ia := &Iface{Name: ifaceName(t.Prefix, b.Name, len(a.Ifaces)), Host: a}
		ib := &Iface{Name: ifaceName(t.Prefix, a.Name, len(b.Ifaces)), Host: b}
		ia.Peer, ib.Peer = ib, ia
		ia.IPv4, ib.IPv4, ia.IPv6, ib.IPv6 = linkAddrs(n + 1)
		a.Ifaces = append(a.Ifaces, ia)
		b.Ifaces = append(b.Ifaces, ib)
		for _, i := range []*Iface{ia, ib} {
			if err := i.Host.Do(i.reopen); err != nil {
				return fmt.Errorf("link %s-%s: host %s: %w", ls.A, ls.B, i.Host.Name, err)
			}
		}
	}
	return nil
}

// reopen runs inside the interface's namespace: it fills in the index and
// MAC and checks the link is a veth carrying its addresses.
func (i *Iface) reopen() error {
	l, err := netlink.LinkByName(i.Name)
	if err != nil {
		return fmt.Errorf("no interface %s: %w", i.Name, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("%s is a %s, not a veth", i.Name, l.Type())
	}
	i.Index, i.MAC = l.Attrs().Index, l.Attrs().HardwareAddr
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("%s: list addresses: %w", i.Name, err)
	}
	for _, want := range []netip.Prefix{i.IPv4, i.IPv6} {
		found := false
		for _, a := range addrs {
			if p, ok := netipPrefix(a); ok && p == want {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s lacks address %s", i.Name, want)
		}
	}
	return nil
}

func netipPrefix(a netlink.Addr) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.IPNet == nil {
		return netip.Prefix{}, false
	}
	bits, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), bits), true
}

// Detach lets go of the topology without removing it: it closes this
// process's handles on the namespaces and leaves namespaces, veths and
// XDP_PASS programs in place, for a topology meant to outlive its creator
// (see NewDetachedPrefix). Afterwards the Topology is unusable, and Close
// does nothing; remove the topology with Sweep(prefix).
func (t *Topology) Detach() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.closers = nil // the XDP_PASS programs stay attached to their devices
	for _, h := range t.Hosts {
		if h.ns.IsOpen() {
			h.ns.Close()
		}
	}
}
