package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/xdplab/xdplab/lab/bpfload"
)

// Config is fixed at load time.
type Config struct {
	// Port the proxy serves (UDP); 11211 if zero.
	Port uint16
	// Listen4 and Listen6 are the proxy's addresses clients send requests
	// to, and replies come from; at least one must be valid.
	Listen4, Listen6 netip.Addr
	// NewFlows bounds the client flows (by which replies come back; see
	// the package doc) each CPU plants a second, so that requests from
	// spoofed sources cannot push real clients' flows out of the map
	// faster; a request over it goes to the slow path. DefaultNewFlows if
	// zero.
	NewFlows uint32
}

// DefaultNewFlows is Config.NewFlows's default.
const DefaultNewFlows = 1024

// Backend is one memcached server behind the proxy.
type Backend struct {
	// Server places the backend on the ring (its nutcracker identity) and
	// gives its port.
	Server Server
	// IPv4 and IPv6 are where requests of each family go; a request of a
	// family the backend lacks goes to the slow path.
	IPv4, IPv6 netip.Addr
}

// Dst is where the proxy's own requests to the backend go (its IPv4
// address if it has one): health probes and the slow path's forwards.
func (b Backend) Dst() (netip.AddrPort, error) {
	a := b.IPv4
	if !a.IsValid() {
		a = b.IPv6
	}
	if !a.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("backend %s has no address", b.Server)
	}
	return netip.AddrPortFrom(a, b.Server.Port), nil
}

// Objects are the loaded proxy program and its maps.
type Objects struct {
	cfg  Config
	objs proxyObjects

	mu    sync.Mutex                // guards the fields below and the map updates
	slot  uint32                    // the ring the program reads
	addrs map[proxyProxyAddr]uint32 // backend_addrs as last written
	nback int
	gen   uint32 // fib_gen as last written
}

// Load loads the proxy program through the verifier with cfg fixed in it.
func Load(cfg Config) (*Objects, error) {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.NewFlows == 0 {
		cfg.NewFlows = DefaultNewFlows
	}
	if !cfg.Listen4.Is4() && !cfg.Listen6.Is6() {
		return nil, errors.New("proxy: needs an IPv4 or IPv6 listen address")
	}
	if cfg.Listen4.IsValid() && !cfg.Listen4.Is4() || cfg.Listen6.IsValid() && (!cfg.Listen6.Is6() || cfg.Listen6.Is4In6()) {
		return nil, fmt.Errorf("proxy: listen addresses %s, %s: want an IPv4 and an IPv6 one", cfg.Listen4, cfg.Listen6)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}
	spec, err := loadProxy()
	if err != nil {
		return nil, err
	}
	// The generated spec types name the variables: a name changed in C
	// fails the build here, not the load.
	var specs proxySpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, err
	}
	bytesHelpers, err := bpfload.HaveXDPBytes()
	if err != nil {
		return nil, err
	}
	vars := map[*ebpf.VariableSpec]any{specs.Port: cfg.Port, specs.NewFlows: cfg.NewFlows,
		specs.XdpBytes: bpfload.Uint8(bytesHelpers)}
	if cfg.Listen4.IsValid() {
		vars[specs.HasListen4] = uint8(1)
		vars[specs.Listen4] = cfg.Listen4.As4()
	}
	if cfg.Listen6.IsValid() {
		vars[specs.HasListen6] = uint8(1)
		vars[specs.Listen6] = cfg.Listen6.As16()
	}
	for v, val := range vars {
		if err := v.Set(val); err != nil {
			return nil, fmt.Errorf("set %s: %w", v.Name, err)
		}
	}
	o := &Objects{cfg: cfg, gen: 1} // fib_gen's initial value
	if err := spec.LoadAndAssign(&o.objs, bpfload.Options()); err != nil {
		return nil, bpfload.Explain("proxy", err)
	}
	return o, nil
}

// Program is the XDP program: attach it to the interface clients reach the
// proxy through and to those facing the backends.
func (o *Objects) Program() *ebpf.Program { return o.objs.ProxyXdp }

// Config is what the objects were loaded with.
func (o *Objects) Config() Config { return o.cfg }

// Close releases the program and maps.
func (o *Objects) Close() error { return o.objs.Close() }

// be16 and be32 give the value whose in-memory (little-endian, as bpfel
// is) bytes are the network-order bytes the program compares.
func be16(v uint16) uint16 { return bits.ReverseBytes16(v) }

func be32(a [4]byte) uint32 { return binary.LittleEndian.Uint32(a[:]) }

func addrKey(a netip.Addr, port uint16) proxyProxyAddr {
	return proxyProxyAddr{Addr: a.As16(), Port: be16(port)}
}

// SetBackends makes backends (live[i] false: ejected; nil: all live) the
// proxy's, and returns the ring the program now routes by. The program
// switches rings in one step: it sees the old ring or the new one.
//
// The ring maps are double-buffered: the next update rewrites the ring
// that was current before this one, which a program run could only still
// be reading if it had stalled for a whole update interval.
func (o *Objects) SetBackends(bs []Backend, live []bool) (*Ring, error) {
	if len(bs) > BackendsMax {
		return nil, fmt.Errorf("proxy: %d backends, at most %d", len(bs), BackendsMax)
	}
	servers := make([]Server, len(bs))
	for i, b := range bs {
		servers[i] = b.Server
		if b.IPv4.IsValid() && !b.IPv4.Is4() || b.IPv6.IsValid() && (!b.IPv6.Is6() || b.IPv6.Is4In6()) {
			return nil, fmt.Errorf("proxy: backend %s: addresses %s, %s: want an IPv4 and an IPv6 one", b.Server, b.IPv4, b.IPv6)
		}
		if !b.IPv4.IsValid() && !b.IPv6.IsValid() {
			return nil, fmt.Errorf("proxy: backend %s has no address", b.Server)
		}
	}
	ring, err := NewRing(servers, live)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if len(ring.points) > RingMax {
		return nil, fmt.Errorf("proxy: the ring needs %d points, the map holds %d", len(ring.points), RingMax)
	}
	addrs := map[proxyProxyAddr]uint32{}
	for i, b := range bs {
		for _, a := range []netip.Addr{b.IPv4, b.IPv6} {
			if !a.IsValid() {
				continue
			}
			k := addrKey(a, b.Server.Port)
			if _, dup := addrs[k]; dup {
				return nil, fmt.Errorf("proxy: two backends at %s", netip.AddrPortFrom(a, b.Server.Port))
			}
			addrs[k] = uint32(i)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()

	// Backends first, so the new ring never names a missing one.
	for i, b := range bs {
		v := proxyProxyBackend{Port: be16(b.Server.Port)}
		if b.IPv4.IsValid() {
			v.Addr4, v.Has4 = be32(b.IPv4.As4()), 1
		}
		if b.IPv6.IsValid() {
			v.Addr6, v.Has6 = b.IPv6.As16(), 1
		}
		if err := o.objs.Backends.Put(uint32(i), &v); err != nil {
			return nil, fmt.Errorf("proxy: backend %d: %w", i, err)
		}
	}
	for k, i := range addrs {
		if err := o.objs.BackendAddrs.Put(&k, i); err != nil {
			return nil, fmt.Errorf("proxy: backend address: %w", err)
		}
	}
	r := new(proxyProxyRing)
	r.N = uint32(len(ring.points))
	for i, p := range ring.points {
		r.Hash[i], r.Backend[i] = p.Hash, uint16(p.Server)
	}
	copy(r.Bucket[:], ring.buckets())
	next := o.slot ^ 1
	if err := o.objs.Rings.Put(next, r); err != nil {
		return nil, fmt.Errorf("proxy: write ring: %w", err)
	}
	if err := o.objs.RingSlot.Set(next); err != nil {
		return nil, fmt.Errorf("proxy: switch ring: %w", err)
	}
	o.slot = next

	// Nothing refers to what is gone any more: forget it.
	for k := range o.addrs {
		if _, ok := addrs[k]; !ok {
			if err := o.objs.BackendAddrs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return nil, fmt.Errorf("proxy: forget backend address: %w", err)
			}
		}
	}
	// Flows name backends by index: once an index means another address,
	// a remembered flow would let that backend's traffic to the client be
	// taken for replies. Start over (ejections keep the addresses).
	if !maps.Equal(addrs, o.addrs) && o.addrs != nil {
		if err := o.flushFlows(); err != nil {
			return nil, err
		}
	}
	for i := len(bs); i < o.nback; i++ {
		if err := o.objs.Backends.Put(uint32(i), &proxyProxyBackend{}); err != nil {
			return nil, fmt.Errorf("proxy: clear backend %d: %w", i, err)
		}
	}
	o.addrs, o.nback = addrs, len(bs)
	// A cached next hop holds its backend's address and is checked
	// against it, so new backends need no bump; one costs nothing.
	if err := o.bumpFIB(); err != nil {
		return nil, err
	}
	return ring, nil
}

// FIBChanged voids the program's cached next hops (the hops map; see
// bpf/proxy.bpf.c): the next routed request to each backend asks the FIB
// again. WatchFIB calls it on every routing event; call it after changing
// the proxy namespace's routes, neighbours, links or addresses when
// WatchFIB is not running there. Unreported, a change is seen after at
// most HOP_USES (4096) requests per backend and CPU.
func (o *Objects) FIBChanged() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bumpFIB()
}

func (o *Objects) bumpFIB() error {
	next := o.gen + 1
	if next == 0 {
		next = 1 // 0 marks an empty cache entry
	}
	if err := o.objs.FibGen.Set(next); err != nil {
		return fmt.Errorf("proxy: void cached next hops: %w", err)
	}
	o.gen = next
	return nil
}

func (o *Objects) flushFlows() error {
	var k, next proxyProxyFlow
	var keys []proxyProxyFlow
	for err := o.objs.Flows.NextKey(nil, &next); err == nil; err = o.objs.Flows.NextKey(&k, &next) {
		keys = append(keys, next)
		k = next
	}
	for _, k := range keys {
		if err := o.objs.Flows.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("proxy: forget flows: %w", err)
		}
	}
	return nil
}

// Stats are the program's counters, summed over CPUs.
type Stats struct {
	Requests  uint64 // datagrams to the proxy's address and port
	Forwarded uint64 // requests sent to a backend from XDP
	Replies   uint64 // backend replies sent to a client from XDP
	Slow      uint64 // requests handed to the slow path
	NoBackend uint64 // requests passed for want of a live backend
	NoRoute   uint64 // frames passed because the FIB had no next hop
	// ReflectDrop counts requests dropped because their source could
	// start a reply loop: a port memcache.Unanswerable refuses, or a
	// backend's own address and port.
	ReflectDrop uint64
	// SpoofedReply counts datagrams from a backend's address and port to
	// a client of it that came in on an interface other than the one the
	// backend is reached through: passed, not taken for replies.
	SpoofedReply uint64
	// FlowLimit counts the requests of Slow that went there because
	// their CPU had planted Config.NewFlows flows that second.
	FlowLimit uint64
	// Backends counts, per backend index, requests forwarded to it and
	// replies (and error replies) brought back from it.
	Backends []BackendStats
	// PerCPU are the counters above (less Backends) as each CPU counted
	// them: how the load spread over the receive queues.
	PerCPU []CPUStats
}

// CPUStats are one CPU's counters.
type CPUStats struct {
	Requests, Forwarded, Replies, Slow, NoBackend, NoRoute, ReflectDrop, SpoofedReply, FlowLimit uint64
}

// BackendStats are one backend's counters; Errors counts the replies that
// were error lines (ERROR, CLIENT_ERROR, SERVER_ERROR).
type BackendStats struct{ Requests, Replies, Errors uint64 }

// Stats reads and sums the per-CPU counters.
func (o *Objects) Stats() (Stats, error) {
	var st Stats
	var per []proxyProxyStats
	if err := o.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return st, err
	}
	for _, c := range per {
		st.Requests += c.Requests
		st.Forwarded += c.Forwarded
		st.Replies += c.Replies
		st.Slow += c.Slow
		st.NoBackend += c.NoBackend
		st.NoRoute += c.NoRoute
		st.ReflectDrop += c.ReflectDrop
		st.SpoofedReply += c.SpoofedReply
		st.FlowLimit += c.FlowLimit
		st.PerCPU = append(st.PerCPU, CPUStats{c.Requests, c.Forwarded, c.Replies, c.Slow, c.NoBackend, c.NoRoute, c.ReflectDrop, c.SpoofedReply, c.FlowLimit})
	}
	o.mu.Lock()
	n := o.nback
	o.mu.Unlock()
	for i := range n {
		var pb []proxyProxyBackendStats
		if err := o.objs.BackendStats.Lookup(uint32(i), &pb); err != nil {
			return st, err
		}
		var b BackendStats
		for _, c := range pb {
			b.Requests += c.Requests
			b.Replies += c.Replies
			b.Errors += c.Errors
		}
		st.Backends = append(st.Backends, b)
	}
	return st, nil
}
