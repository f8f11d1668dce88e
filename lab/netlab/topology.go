package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Spec describes a topology to build.
type Spec struct {
	// Prefix starts every name; empty means NewPrefix().
	Prefix string
	Hosts  []HostSpec
	Links  []LinkSpec
	// KeepChecksumOffload leaves transmit checksum offload on (see the
	// package doc for why it is off by default).
	KeepChecksumOffload bool
}

// HostSpec describes one host: a network namespace.
type HostSpec struct {
	// Name is short and unique in the topology ("client", "kv1"); it
	// follows the prefix in the namespace name and names the interfaces
	// towards this host.
	Name string
	// Role is free-form, for callers ("client", "kv", "proxy").
	Role string
	// Forward turns on IPv4 and IPv6 forwarding, making the host a router.
	Forward bool
	// Gateway names a directly linked host that default routes go through.
	Gateway string
	// XDPPass attaches an XDP_PASS program to every interface of the host,
	// so that XDP_TX/XDP_REDIRECT frames sent towards it are delivered.
	XDPPass bool
	// GRO turns generic receive offload on for every interface of the
	// host (`ethtool -K dev gro on`; without it netlab turns it off, a
	// veth's default on 6.x but not on 5.10): a socket
	// with UDP_GRO then gets same-sized datagrams that arrive together
	// as one train, as on a NIC, which a benchmark client reads for a
	// fraction of the per-datagram cost. Sockets without UDP_GRO get
	// datagrams as before.
	GRO bool
}

// LinkSpec joins two hosts, by name, with a veth pair.
type LinkSpec struct{ A, B string }

// Topology is a built Spec. Close removes it.
type Topology struct {
	Prefix string
	Hosts  []*Host

	mu      sync.Mutex
	closed  bool
	closers []io.Closer // XDP programs, closed before namespaces go
}

// Host is one network namespace of a topology.
type Host struct {
	Name string
	Role string
	// NetNS is the namespace's name, under NetnsDir.
	NetNS string
	// Ifaces are the host's veth ends, in the order of the spec's links.
	Ifaces []*Iface

	ns netns.NsHandle
}

// Iface is one veth end.
type Iface struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	IPv4  netip.Prefix // address and its subnet, e.g. 198.18.1.1/24
	IPv6  netip.Prefix // e.g. fd00:0:0:1::1/64
	Host  *Host
	Peer  *Iface // the other end of the veth pair
}

// Path is the namespace's bind mount, for nsenter --net=PATH.
func (h *Host) Path() string { return filepath.Join(NetnsDir, h.NetNS) }

// Dev is the name of the host's first interface ("" if it has none).
func (h *Host) Dev() string {
	if len(h.Ifaces) == 0 {
		return ""
	}
	return h.Ifaces[0].Name
}

// IPv4 is the address of the host's first interface.
func (h *Host) IPv4() netip.Addr {
	if len(h.Ifaces) == 0 {
		return netip.Addr{}
	}
	return h.Ifaces[0].IPv4.Addr()
}

// IPv6 is the address of the host's first interface.
func (h *Host) IPv6() netip.Addr {
	if len(h.Ifaces) == 0 {
		return netip.Addr{}
	}
	return h.Ifaces[0].IPv6.Addr()
}

// IfaceTo returns the host's interface on the link to the named host, or nil.
func (h *Host) IfaceTo(peer string) *Iface {
	for _, i := range h.Ifaces {
		if i.Peer.Host.Name == peer {
			return i
		}
	}
	return nil
}

// Iface returns the host's interface with the given name, or nil.
func (h *Host) Iface(dev string) *Iface {
	for _, i := range h.Ifaces {
		if i.Name == dev {
			return i
		}
	}
	return nil
}

// Do runs fn on the calling goroutine with its OS thread locked and
// switched into the host's namespace, and switches back afterwards.
// Sockets fn opens stay in the namespace and can be used after Do returns;
// goroutines fn starts do not run in the namespace.
func (h *Host) Do(fn func() error) error {
	if !h.ns.IsOpen() {
		return fmt.Errorf("netlab: host %s: topology closed", h.Name)
	}
	return inNetns(h.ns, fn)
}

// Dial is net.Dial from the host's namespace (a bench.Target's Dial).
func (h *Host) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.Dial(network, addr)
		return err
	})
	return c, err
}

// Command returns a command that runs name in the host's namespace, via
// nsenter (unlike `ip netns exec`, it keeps /sys and so /sys/fs/bpf pins).
// nsenter execs name in place, so the command's pid is name's.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + h.Path(), "--", name}, args...)...)
}

// CommandContext is Command with a context that kills the process.
func (h *Host) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.Path(), "--", name}, args...)...)
}

// Host returns the named host, or nil.
func (t *Topology) Host(name string) *Host {
	for _, h := range t.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// MaxLinks is how many links fit one /24 each into 198.18.0.0/15.
const MaxLinks = 511

func linkAddrs(n int) (a4, b4, a6, b6 netip.Prefix) {
	// Link n gets 198.18.0.0/15's n-th /24 and fd00:0:0:n::/64.
	base := 198<<24 | 18<<16 | n<<8
	v4 := func(host int) netip.Prefix {
		x := base | host
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}), 24)
	}
	v6 := func(host byte) netip.Prefix {
		b := [16]byte{0: 0xfd, 6: byte(n >> 8), 7: byte(n), 15: host}
		return netip.PrefixFrom(netip.AddrFrom16(b), 64)
	}
	return v4(1), v4(2), v6(1), v6(2)
}

// ifaceName names the interface towards peer: prefix-peer, or prefix-eN
// (N: the interface's position on its host) when that would exceed the
// kernel's 15 characters.
func ifaceName(prefix, peer string, pos int) string {
	if n := prefix + "-" + peer; len(n) <= unix.IFNAMSIZ-1 {
		return n
	}
	return fmt.Sprintf("%s-e%d", prefix, pos)
}

func (s *Spec) validate() error {
	if len(s.Hosts) == 0 {
		return errors.New("no hosts")
	}
	if len(s.Links) > MaxLinks {
		return fmt.Errorf("%d links, at most %d fit 198.18.0.0/15", len(s.Links), MaxLinks)
	}
	if p, _, ok := ParsePrefix(s.Prefix); !ok || p != s.Prefix {
		return fmt.Errorf("prefix %q is not a run prefix (see NewPrefix)", s.Prefix)
	}
	if len(s.Prefix)+3 > unix.IFNAMSIZ-1 {
		return fmt.Errorf("prefix %q too long for interface names", s.Prefix)
	}
	names := map[string]bool{}
	for _, h := range s.Hosts {
		if h.Name == "" || !isBase36(h.Name) {
			return fmt.Errorf("host name %q: use lowercase letters and digits", h.Name)
		}
		if names[h.Name] {
			return fmt.Errorf("host %q twice", h.Name)
		}
		names[h.Name] = true
	}
	pairs := map[[2]string]bool{}
	for _, l := range s.Links {
		if !names[l.A] || !names[l.B] || l.A == l.B {
			return fmt.Errorf("link %s-%s: needs two different hosts of the spec", l.A, l.B)
		}
		k := [2]string{min(l.A, l.B), max(l.A, l.B)}
		if pairs[k] {
			return fmt.Errorf("link %s-%s twice", l.A, l.B)
		}
		pairs[k] = true
	}
	for _, h := range s.Hosts {
		if h.Gateway != "" && !pairs[[2]string{min(h.Name, h.Gateway), max(h.Name, h.Gateway)}] {
			return fmt.Errorf("host %s: gateway %s is not linked to it", h.Name, h.Gateway)
		}
	}
	return nil
}

// New builds the topology. On error everything built so far is removed.
func New(spec Spec) (*Topology, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: needs root (network namespaces, BPF)")
	}
	if spec.Prefix == "" {
		spec.Prefix = NewPrefix()
	}
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	t := &Topology{Prefix: spec.Prefix}
	if err := t.build(spec); err != nil {
		if cerr := t.Close(); cerr != nil {
			err = multierror.Append(err, cerr)
		}
		return nil, err
	}
	return t, nil
}

func (t *Topology) build(spec Spec) error {
	byName := map[string]*Host{}
	for _, hs := range spec.Hosts {
		h := &Host{Name: hs.Name, Role: hs.Role, NetNS: spec.Prefix + "-" + hs.Name, ns: netns.None()}
		ns, err := createNamedNetns(h.NetNS)
		if err != nil {
			return err
		}
		h.ns = ns
		t.Hosts = append(t.Hosts, h)
		byName[h.Name] = h
		if err := h.Do(func() error { return setupHost(hs) }); err != nil {
			return fmt.Errorf("netlab: host %s: %w", h.Name, err)
		}
	}
	for i, ls := range spec.Links {
		if err := t.addLink(i+1, byName[ls.A], byName[ls.B], !spec.KeepChecksumOffload); err != nil {
			return fmt.Errorf("netlab: link %s-%s: %w", ls.A, ls.B, err)
		}
	}
	for _, h := range t.Hosts {
		if err := h.Do(h.waitReady); err != nil {
			return fmt.Errorf("netlab: host %s: %w", h.Name, err)
		}
	}
	for _, hs := range spec.Hosts {
		h := byName[hs.Name]
		if hs.Gateway != "" {
			if err := h.Do(func() error { return defaultRoutes(h.IfaceTo(hs.Gateway)) }); err != nil {
				return fmt.Errorf("netlab: host %s: routes: %w", h.Name, err)
			}
		}
		// Set either way: a veth's default differs by kernel (on in
		// 5.10, off on 6.x), and a topology should be the same on all.
		for _, i := range h.Ifaces {
			if err := h.Do(func() error { return setGRO(i.Name, hs.GRO) }); err != nil {
				return fmt.Errorf("netlab: host %s: gro %v on %s: %w", h.Name, hs.GRO, i.Name, err)
			}
		}
		if hs.XDPPass {
			for _, i := range h.Ifaces {
				c, err := AttachXDPPass(h, i.Name)
				if err != nil {
					return err
				}
				t.closers = append(t.closers, c)
			}
		}
	}
	return nil
}

// setupHost runs inside the new namespace: loopback up, forwarding.
func setupHost(hs HostSpec) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if hs.Forward {
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// addLink creates link n's veth pair directly inside a's and b's
// namespaces (never in the root one), then addresses it.
func (t *Topology) addLink(n int, a, b *Host, csumOff bool) error {
	ia := &Iface{Name: ifaceName(t.Prefix, b.Name, len(a.Ifaces)), Host: a}
	ib := &Iface{Name: ifaceName(t.Prefix, a.Name, len(b.Ifaces)), Host: b}
	ia.Peer, ib.Peer = ib, ia
	ia.IPv4, ib.IPv4, ia.IPv6, ib.IPv6 = linkAddrs(n)
	h, err := netlink.NewHandleAt(a.ns)
	if err != nil {
		return err
	}
	defer h.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ia.Name},
		PeerName:      ib.Name,
		PeerNamespace: netlink.NsFd(b.ns),
	}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", ia.Name, ib.Name, err)
	}
	a.Ifaces = append(a.Ifaces, ia)
	b.Ifaces = append(b.Ifaces, ib)
	for _, i := range []*Iface{ia, ib} {
		if err := i.Host.Do(i.lookup); err != nil {
			return err
		}
	}
	for _, i := range []*Iface{ia, ib} {
		if err := i.Host.Do(func() error { return i.configure(csumOff) }); err != nil {
			return fmt.Errorf("%s: %w", i.Name, err)
		}
	}
	return nil
}

func (i *Iface) lookup() error {
	l, err := netlink.LinkByName(i.Name)
	if err != nil {
		return err
	}
	i.Index, i.MAC = l.Attrs().Index, l.Attrs().HardwareAddr
	return nil
}

// configure runs inside the interface's namespace, after both ends exist.
func (i *Iface) configure(csumOff bool) error {
	l, err := netlink.LinkByIndex(i.Index)
	if err != nil {
		return err
	}
	if csumOff {
		if err := setTxChecksum(i.Name, false); err != nil {
			return fmt.Errorf("tx checksum offload off: %w", err)
		}
	}
	for _, p := range []netip.Prefix{i.IPv4, i.IPv6} {
		addr := &netlink.Addr{IPNet: prefixNet(p)}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("add %s: %w", p, err)
		}
	}
	for _, p := range []netip.Prefix{i.Peer.IPv4, i.Peer.IPv6} {
		fam := netlink.FAMILY_V4
		if p.Addr().Is6() {
			fam = netlink.FAMILY_V6
		}
		if err := netlink.NeighAdd(&netlink.Neigh{
			LinkIndex: i.Index, Family: fam, State: netlink.NUD_PERMANENT,
			IP: p.Addr().AsSlice(), HardwareAddr: i.Peer.MAC,
		}); err != nil {
			return fmt.Errorf("neighbour %s: %w", p.Addr(), err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return nil
}

// LinkUpTimeout bounds the wait for veths to become usable; generous for
// VMs under TCG.
const LinkUpTimeout = 10 * time.Second

// waitReady waits, inside the host's namespace, until every interface is
// operationally up and its addresses are local. Both happen in deferred
// kernel work after the link comes up: the qdisc is attached with the
// operational state (linkwatch), and until then every packet sent is
// dropped; an IPv6 address gets its local route only when DAD finishes,
// even with nodad. Without the wait a test's first datagram can vanish.
func (h *Host) waitReady() error {
	deadline := time.Now().Add(LinkUpTimeout)
	for _, i := range h.Ifaces {
		for {
			ready, state, err := i.ready()
			if err != nil {
				return fmt.Errorf("%s: %w", i.Name, err)
			}
			if ready {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ready after %v: %s", i.Name, LinkUpTimeout, state)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

func (i *Iface) ready() (bool, string, error) {
	l, err := netlink.LinkByIndex(i.Index)
	if err != nil {
		return false, "", err
	}
	if s := l.Attrs().OperState; s != netlink.OperUp {
		return false, "state " + s.String(), nil
	}
	for _, p := range []netip.Prefix{i.IPv4, i.IPv6} {
		rs, err := netlink.RouteGet(p.Addr().AsSlice())
		if err != nil || len(rs) == 0 || rs[0].Type != unix.RTN_LOCAL {
			return false, fmt.Sprintf("%s not local yet", p.Addr()), nil
		}
	}
	return true, "", nil
}

func defaultRoutes(via *Iface) error {
	for _, gw := range []netip.Addr{via.Peer.IPv4.Addr(), via.Peer.IPv6.Addr()} {
		bits := 32
		if gw.Is6() {
			bits = 128
		}
		r := &netlink.Route{
			LinkIndex: via.Index,
			Dst:       &net.IPNet{IP: net.IP(make([]byte, bits/8)), Mask: net.CIDRMask(0, bits)},
			Gw:        gw.AsSlice(),
		}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("default via %s: %w", gw, err)
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Close detaches the topology's XDP programs, kills any process still
// inside its namespaces, and removes the namespaces (their veths go with
// them). It is safe to call more than once; later calls return nil.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs error
	for i := len(t.closers) - 1; i >= 0; i-- {
		if err := t.closers[i].Close(); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	t.closers = nil
	for _, h := range t.Hosts {
		if err := killInNetns(h.Path()); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("host %s: %w", h.Name, err))
		}
		if h.ns.IsOpen() {
			h.ns.Close()
		}
		if err := deleteNamedNetns(h.NetNS); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("host %s: %w", h.Name, err))
		}
	}
	if errs != nil {
		return fmt.Errorf("netlab: close %s: %w", t.Prefix, errs)
	}
	return nil
}
