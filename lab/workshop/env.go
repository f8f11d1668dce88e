package workshop

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
)

// XDP actions, as a program returns them.
const (
	XDPAborted = iota
	XDPDrop
	XDPPass
	XDPTX
	XDPRedirect
)

// ActionName is the name a student's C uses for an XDP action.
func ActionName(a uint32) string {
	names := []string{"XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"}
	if int(a) < len(names) {
		return names[a]
	}
	return fmt.Sprintf("action %d (not an XDP action)", a)
}

// The addresses of crafted frames: a client and the server the program
// runs on.
var (
	Client = netip.MustParseAddrPort("198.18.0.1:40000")
	Server = netip.MustParseAddrPort("198.18.0.2:11211")
)

// Request is a memcached UDP request from Client to Server, request id id.
func Request(id uint16, payload string) frame.Datagram {
	return frame.Datagram{Src: Client, Dst: Server, ID: id, Payload: []byte(payload),
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
}

// Run runs the program once on frame with BPF_PROG_TEST_RUN and returns its
// action and the frame as the program left it.
func (e *Env) Run(frame []byte) (uint32, []byte, error) {
	out := make([]byte, len(frame)+4096) // room for a program that grows the frame
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := e.prog.Run(&opts)
	if err != nil {
		return 0, nil, fmt.Errorf("running the program on a frame: %w", err)
	}
	return ret, opts.DataOut, nil
}

// Counter is slot i of a per-CPU counter map, summed over the CPUs.
func (e *Env) Counter(name string, i uint32) (uint64, error) {
	m, err := e.Map(name)
	if err != nil {
		return 0, err
	}
	var per []uint64
	if err := m.Lookup(i, &per); err != nil {
		return 0, fmt.Errorf("reading %s[%d]: %w", name, i, err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// ResetCounters zeroes every slot of a per-CPU counter map.
func (e *Env) ResetCounters(name string) error {
	m, err := e.Map(name)
	if err != nil {
		return err
	}
	zero := make([]uint64, ebpf.MustPossibleCPU())
	for i := uint32(0); i < m.MaxEntries(); i++ {
		if err := m.Put(i, zero); err != nil {
			return err
		}
	}
	return nil
}

// Other frames, which a memcached program must leave alone.

// ARPFrame is an ARP request for Server's address.
func ARPFrame() []byte {
	b := make([]byte, 42)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], 0x0806)
	copy(b[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	s, t := Client.Addr().As4(), Server.Addr().As4()
	copy(b[28:32], s[:])
	copy(b[38:42], t[:])
	return b
}

// TCPFrame is a request's frame with its IP protocol made TCP: what the
// program sees of it is the same up to the protocol byte.
func TCPFrame() []byte {
	b := Request(1, "get foo\r\n").Frame()
	b[frame.EthLen+9] = 6 // IPv4 protocol
	return b
}

// pair is a client—server veth pair with the student's program on the
// server's end, removed when the check run ends, pass or fail.
type pair struct{ client, server *netlab.Host }

// Pair builds the veth pair (once per check run) and attaches the program.
func (e *Env) Pair() (*pair, error) {
	if e.pair != nil {
		return e.pair, nil
	}
	topo, err := e.topology(netlab.Spec{
		// XDP_PASS on the client's end: a veth delivers XDP_TX frames
		// only to a peer that has an XDP program.
		Hosts: []netlab.HostSpec{{Name: "client", Role: "client", XDPPass: true}, {Name: "server", Role: "kv"}},
		Links: []netlab.LinkSpec{{A: "client", B: "server"}},
	}, "server", "client")
	if err != nil {
		return nil, err
	}
	e.pair = &pair{client: topo.Host("client"), server: topo.Host("server")}
	return e.pair, nil
}

// topology builds spec for this check run and attaches the program to the
// interface of host on its link to peer. Env.close removes it all.
func (e *Env) topology(spec netlab.Spec, host, peer string) (*netlab.Topology, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("namespaces and veth pairs need root: run with sudo")
	}
	// What an interrupted check left (its process is gone) goes first.
	if _, err := netlab.SweepStale(); err != nil {
		fmt.Fprintln(os.Stderr, "workshop: sweeping what earlier runs left:", err)
	}
	topo, err := netlab.New(spec)
	if err != nil {
		return nil, err
	}
	h := topo.Host(host)
	l, err := netlab.AttachXDP(h, h.IfaceTo(peer).Name, e.prog)
	if err != nil {
		topo.Close()
		return nil, err
	}
	e.closers = append(e.closers, func() {
		l.Close()
		if err := topo.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "workshop:", err)
		}
	})
	return topo, nil
}

// ServerAddr is the server's IPv4 address and port.
func (p *pair) ServerAddr(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(p.server.IPv4(), port)
}

// Sockets opens, on port 11211, a UDP socket on the server (as memcached
// would; nil unless listen) and one on the client connected to it. Close
// closes them.
func (p *pair) Sockets(listen bool) (*sockets, error) {
	s := &sockets{}
	addr := net.UDPAddrFromAddrPort(p.ServerAddr(memcache.DefaultPort))
	err := p.client.Do(func() (err error) {
		s.client, err = net.DialUDP("udp4", nil, addr)
		return err
	})
	if err == nil && listen {
		err = p.server.Do(func() (err error) {
			s.server, err = net.ListenUDP("udp4", addr)
			return err
		})
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

type sockets struct{ client, server *net.UDPConn }

// counterSockets builds the veth pair, zeroes the counters and opens a
// server socket and a client: what a counting lesson's veth check starts
// from.
func (e *Env) counterSockets() (*sockets, error) {
	p, err := e.Pair()
	if err != nil {
		return nil, err
	}
	if err := e.ResetCounters("counters"); err != nil {
		return nil, err
	}
	return p.Sockets(true)
}

func (s *sockets) Close() {
	for _, c := range []*net.UDPConn{s.client, s.server} {
		if c != nil {
			c.Close()
		}
	}
}

// Send sends a memcached request from the client, framed with request id id.
func (s *sockets) Send(id uint16, req string) error {
	msg := memcache.AppendHeader(nil, memcache.Header{RequestID: id, Total: 1})
	_, err := s.client.Write(append(msg, req...))
	return err
}

// Received waits up to wait for n datagrams on the server socket and
// returns how many came.
func (s *sockets) Received(n int, wait time.Duration) int {
	buf := make([]byte, 2048)
	s.server.SetReadDeadline(time.Now().Add(wait))
	for i := range n {
		if _, err := s.server.Read(buf); err != nil {
			return i
		}
	}
	return n
}

// Exchange sends a request from the client and returns the reply's
// payload (header checked and cut), or an error after wait.
func (s *sockets) Exchange(id uint16, req string, wait time.Duration) (string, error) {
	if err := s.Send(id, req); err != nil {
		return "", err
	}
	c := s.client
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("no reply within %v", wait)
	}
	h, err := memcache.ParseHeader(buf[:n])
	if err != nil {
		return "", fmt.Errorf("the reply is %d bytes, shorter than memcached's 8-byte frame header", n)
	}
	if h.RequestID != id {
		return "", fmt.Errorf("the reply carries request id %d, the request had %d", h.RequestID, id)
	}
	return string(buf[memcache.HeaderLen:n]), nil
}
