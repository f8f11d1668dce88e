package kv

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// SetAddrs makes addrs the addresses XDP answers on; frames to any other
// address (transit, broadcast, multicast) pass untouched.
func (o *Objects) SetAddrs(addrs []netip.Addr) error {
	want := map[[16]byte]bool{}
	for _, a := range addrs {
		want[a.Unmap().As16()] = true // IPv4 as ::ffff:a.b.c.d, as XDP keys it
	}
	var k [16]byte
	var v uint8
	var stale [][16]byte
	it := o.objs.OwnAddrs.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
		delete(want, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("own addresses: %w", err)
	}
	for _, k := range stale {
		if err := o.objs.OwnAddrs.Delete(k); err != nil {
			return fmt.Errorf("own addresses: %w", err)
		}
	}
	if len(stale) > 0 {
		// Each CPU remembers the last address it found: forget them.
		o.addrsGen++
		if err := o.objs.AddrsGen.Set(o.addrsGen); err != nil {
			return fmt.Errorf("own addresses: %w", err)
		}
	}
	for k := range want {
		if err := o.objs.OwnAddrs.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("own addresses (at most %d): %w", o.objs.OwnAddrs.MaxEntries(), err)
		}
	}
	return nil
}

// hostAddrs follows the addresses of one network namespace.
type hostAddrs struct{ h *netlink.Handle }

// currentHostAddrs opens the calling thread's network namespace.
func currentHostAddrs() (*hostAddrs, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &hostAddrs{h: h}, nil
}

// list is every address of every interface, as the kernel takes any of
// them on any interface.
func (a *hostAddrs) list() ([]netip.Addr, error) {
	as, err := a.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(as))
	for _, x := range as {
		if ip, ok := netip.AddrFromSlice(x.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

func (a *hostAddrs) close() { a.h.Close() }
