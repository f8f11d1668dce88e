package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
)

// Replies the slow path makes itself. nutcracker 0.5 answers a request it
// cannot forward with "SERVER_ERROR " and strerror(errno): a pool whose
// servers are all down or ejected gets ECONNREFUSED's text (measured on
// Debian's nutcracker), a server that does not answer in time ETIMEDOUT's.
var (
	replyNoBackend = []byte("SERVER_ERROR Connection refused\r\n")
	replyTimeout   = []byte("SERVER_ERROR Connection timed out\r\n")
	replyError     = []byte("ERROR\r\n")
	// VersionReply is what the proxy answers "version" with, itself:
	// "version" names no key, so no backend owns it.
	VersionReply = []byte("VERSION xdplab-proxy\r\n")
)

// SlowConfig tunes SlowPath; zero values pick the defaults.
type SlowConfig struct {
	// Timeout bounds the wait for a backend's reply; default 1s. A
	// request that times out gets "SERVER_ERROR Connection timed out".
	Timeout time.Duration
	// MaxInFlight bounds the client datagrams served at once; default 4096.
	MaxInFlight int
}

// SlowStats are the slow path's counters.
type SlowStats struct {
	Requests uint64 // client datagrams received
	Splits   uint64 // gets split over several backends
	Errors   uint64 // error replies made by the proxy (malformed, no backend, timeout)
	Versions uint64 // version requests answered by the proxy
	// Refused counts datagrams left unanswered as reflection risks:
	// memcache.Unanswerable, or from a backend's own address and port.
	Refused uint64
	// Backends counts, per backend index, requests forwarded, replies
	// received and replies that did not come in time.
	Backends []SlowBackendStats
}

// SlowBackendStats are one backend's slow-path counters; Errors counts the
// replies that were error lines.
type SlowBackendStats struct{ Requests, Replies, Errors, Timeouts uint64 }

type slowCounters struct {
	requests, splits, errors, versions, refused atomic.Uint64
	backends                                    []backendCounters
}

// SlowPath serves, on the proxy's address and port, the requests the XDP
// program passes: it forwards each request to the backend owning its key
// from a socket of its own, splits a get spanning backends into one get
// per backend and merges the replies in the client's key order (as
// nutcracker does), answers "version" and malformed requests itself, and
// replies to the client from the proxy's address under the client's
// request id.
type SlowPath struct {
	cfg      SlowConfig
	backends []Backend
	dst      []netip.AddrPort
	// serving holds every backend's addresses with its port: a request
	// from one would have a backend answer a backend.
	serving map[netip.AddrPort]bool
	lis     []*net.UDPConn
	up      *net.UDPConn
	sem     chan struct{}
	st      slowCounters

	ring atomic.Pointer[Ring]

	mu      sync.Mutex // guards the fields below
	nextID  uint16
	pending map[uint16]*upCall
	reasm   memcache.Reassembler
}

// upCall is one request forwarded to a backend, waiting for its reply.
type upCall struct {
	from  netip.AddrPort
	reply chan []byte
}

// NewSlowPath binds the proxy's addresses (listen, one per family, with
// the proxy's port) and an upstream socket in the calling thread's network
// namespace. ring is the ring to route by until SetRing replaces it.
func NewSlowPath(listen []netip.AddrPort, backends []Backend, ring *Ring, cfg SlowConfig) (*SlowPath, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4096
	}
	s := &SlowPath{cfg: cfg, backends: slices.Clone(backends), pending: map[uint16]*upCall{},
		serving: map[netip.AddrPort]bool{}, sem: make(chan struct{}, cfg.MaxInFlight)}
	s.st.backends = make([]backendCounters, len(backends))
	for _, b := range backends {
		d, err := b.Dst()
		if err != nil {
			return nil, fmt.Errorf("slow path: %w", err)
		}
		s.dst = append(s.dst, d)
		for _, a := range []netip.Addr{b.IPv4, b.IPv6} {
			if a.IsValid() {
				s.serving[netip.AddrPortFrom(a, b.Server.Port)] = true
			}
		}
	}
	s.ring.Store(ring)
	for _, ap := range listen {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("slow path: listen on %s: %w", ap, err)
		}
		_ = c.SetReadBuffer(4 << 20)
		s.lis = append(s.lis, c)
	}
	up, err := net.ListenUDP("udp", nil)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("slow path: upstream socket: %w", err)
	}
	_ = up.SetReadBuffer(4 << 20)
	s.up = up
	return s, nil
}

// Addrs are the addresses the slow path serves.
func (s *SlowPath) Addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, c := range s.lis {
		out = append(out, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return out
}

// SetRing makes the slow path route by r (after a health change).
func (s *SlowPath) SetRing(r *Ring) { s.ring.Store(r) }

// Close closes the sockets; Serve returns.
func (s *SlowPath) Close() error {
	var err error
	for _, c := range s.lis {
		err = errors.Join(err, c.Close())
	}
	if s.up != nil {
		err = errors.Join(err, s.up.Close())
	}
	return err
}

// Stats reads the counters.
func (s *SlowPath) Stats() SlowStats {
	st := SlowStats{Requests: s.st.requests.Load(), Splits: s.st.splits.Load(),
		Errors: s.st.errors.Load(), Versions: s.st.versions.Load(), Refused: s.st.refused.Load()}
	for i := range s.st.backends {
		b := &s.st.backends[i]
		st.Backends = append(st.Backends, SlowBackendStats{b.requests.Load(), b.replies.Load(), b.errors.Load(), b.timeouts.Load()})
	}
	return st
}

// Serve serves until ctx is done, then closes the sockets.
func (s *SlowPath) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	errc := make(chan error, len(s.lis)+1)
	go func() { errc <- s.readUpstream() }()
	for _, c := range s.lis {
		go func() { errc <- s.readClients(c) }()
	}
	var first error
	for range len(s.lis) + 1 {
		if err := <-errc; err != nil && first == nil {
			first = err
			s.Close()
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return first
}

func (s *SlowPath) readClients(c *net.UDPConn) error {
	buf := make([]byte, 65536)
	own := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("slow path: read: %w", err)
		}
		s.st.requests.Add(1)
		h, err := memcache.ParseHeader(buf[:n])
		// memcached drops a request spread over several datagrams (or a
		// datagram too short for a header); so does the proxy.
		if err != nil || h.Total != 1 {
			continue
		}
		if memcache.Unanswerable(from.Port(), own, buf[memcache.HeaderLen:n]) ||
			s.serving[netip.AddrPortFrom(from.Addr().Unmap(), from.Port())] {
			s.st.refused.Add(1)
			continue
		}
		payload := bytes.Clone(buf[memcache.HeaderLen:n])
		s.sem <- struct{}{}
		go func() {
			defer func() { <-s.sem }()
			reply := s.serve(payload)
			if len(reply) == 0 {
				return
			}
			for _, d := range memcache.AppendDatagrams(nil, h.RequestID, reply) {
				// A lost reply is UDP's to lose; the client retries.
				_, _ = c.WriteToUDPAddrPort(d, from)
			}
		}()
	}
}

// backendCounters are one backend's slow-path counters as they run.
type backendCounters struct{ requests, replies, errors, timeouts atomic.Uint64 }

// reply counts a reply that came back from the backend.
func (c *backendCounters) reply(r []byte) {
	c.replies.Add(1)
	if memcache.IsErrorReply(r) {
		c.errors.Add(1)
	}
}

// readUpstream hands backend replies to the requests waiting for them.
func (s *SlowPath) readUpstream() error {
	buf := make([]byte, 65536)
	for {
		n, from, err := s.up.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("slow path: upstream read: %w", err)
		}
		h, err := memcache.ParseHeader(buf[:n])
		if err != nil {
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		s.mu.Lock()
		// Only the backend asked may answer: anything else under the same
		// id (a stray or malformed datagram) is dropped, not taken for it.
		if call := s.pending[h.RequestID]; call != nil && call.from == from {
			if _, reply, done := s.reasm.Add(buf[:n]); done {
				delete(s.pending, h.RequestID)
				call.reply <- reply
			}
		}
		s.mu.Unlock()
	}
}

// forward sends one request (raw, whose reply is framed as cmd's) to
// backend b and returns the reply, or an error reply of the proxy's own.
// With noreply it waits for nothing.
func (s *SlowPath) forward(b int, cmd memcache.Command, raw []byte, noreply bool) []byte {
	bc := &s.st.backends[b]
	bc.requests.Add(1)
	call := &upCall{from: s.dst[b], reply: make(chan []byte, 1)}
	s.mu.Lock()
	id, ok := s.freeID()
	if !ok {
		s.mu.Unlock()
		s.st.errors.Add(1)
		return replyTimeout
	}
	if !noreply {
		s.pending[id] = call
		s.reasm.Expect(id, cmd)
	}
	s.mu.Unlock()
	msg := memcache.AppendHeader(make([]byte, 0, memcache.HeaderLen+len(raw)), memcache.Header{RequestID: id, Total: 1})
	msg = append(msg, raw...)
	// A send error (no route, an earlier ICMP error) shows as a timeout.
	_, _ = s.up.WriteToUDPAddrPort(msg, s.dst[b])
	if noreply {
		return nil
	}
	t := time.NewTimer(s.cfg.Timeout)
	defer t.Stop()
	select {
	case r := <-call.reply:
		bc.reply(r)
		return r
	case <-t.C:
		s.mu.Lock()
		if s.pending[id] == call {
			delete(s.pending, id)
			s.reasm.Forget(id)
		}
		s.mu.Unlock()
		select {
		case r := <-call.reply: // it came as the timer fired
			bc.reply(r)
			return r
		default:
		}
		bc.timeouts.Add(1)
		s.st.errors.Add(1)
		return replyTimeout
	}
}

// freeID picks an upstream request id no pending call holds; s.mu held.
func (s *SlowPath) freeID() (uint16, bool) {
	for range 1 << 16 {
		s.nextID++
		if _, busy := s.pending[s.nextID]; !busy {
			return s.nextID, true
		}
	}
	return 0, false
}

// serve answers the requests in one client datagram, in order, and returns
// the replies concatenated.
func (s *SlowPath) serve(payload []byte) []byte {
	var out []byte
	sent := 0 // the end of the replies memcached would have sent already
	ring := s.ring.Load()
	for len(payload) > 0 {
		req, n, err := memcache.ParseRequest(payload)
		if errors.Is(err, memcache.ErrIncomplete) {
			// memcached would read the rest from the next datagrams
			// (garbling them); there is nothing to forward.
			break
		}
		var e *memcache.Error
		if errors.As(err, &e) {
			if e.Close {
				break
			}
			if e.DropPending {
				out = out[:sent]
			}
			if r := e.Reply(); r != nil {
				s.st.errors.Add(1)
				out = append(out, r...)
			}
			payload = payload[min(len(payload), n+e.Swallow):]
			continue
		}
		raw := payload[:n]
		payload = payload[n:]
		switch req.Command {
		case memcache.CmdGet, memcache.CmdGets:
			out = append(out, s.get(ring, req)...)
			sent = len(out)
		case memcache.CmdVersion:
			s.st.versions.Add(1)
			out = append(out, VersionReply...)
		case memcache.CmdQuit:
			return out
		case memcache.CmdStats, memcache.CmdFlushAll, memcache.CmdVerbosity:
			// Keyless commands name no backend; nutcracker does not
			// proxy them either. Say what memcached says to a command it
			// does not know.
			if !req.NoReply {
				s.st.errors.Add(1)
				out = append(out, replyError...)
			}
		default:
			b := ring.Lookup(req.Key)
			if b < 0 {
				if !req.NoReply {
					s.st.errors.Add(1)
					out = append(out, replyNoBackend...)
				}
				continue
			}
			out = append(out, s.forward(b, req.Command, raw, req.NoReply)...)
		}
	}
	return out
}

// get splits a get or gets over the backends owning its keys, one request
// per backend, and merges the replies in the client's key order.
func (s *SlowPath) get(ring *Ring, req memcache.Request) []byte {
	byBackend := map[int][][]byte{}
	var order []int
	for _, k := range req.Keys {
		b := ring.Lookup(k)
		if b < 0 {
			s.st.errors.Add(1)
			return replyNoBackend
		}
		if _, ok := byBackend[b]; !ok {
			order = append(order, b)
		}
		byBackend[b] = append(byBackend[b], k)
	}
	if len(order) > 1 {
		s.st.splits.Add(1)
	}
	replies := make([][]byte, len(order))
	var wg sync.WaitGroup
	for i, b := range order {
		wg.Go(func() {
			line := []byte(req.Command.String())
			for _, k := range byBackend[b] {
				line = append(append(line, ' '), k...)
			}
			replies[i] = s.forward(b, req.Command, append(line, "\r\n"...), false)
		})
	}
	wg.Wait()
	// Each key's VALUE blocks, in the order its backend sent them (a key
	// asked twice is answered twice).
	blocks := map[string][][]byte{}
	for _, r := range replies {
		for len(r) > 0 {
			eol := bytes.IndexByte(r, '\n')
			if eol < 0 {
				return s.badReply()
			}
			line := r[:eol+1]
			if !bytes.HasPrefix(line, []byte("VALUE ")) {
				if string(line) == "END\r\n" && eol+1 == len(r) {
					break
				}
				// A backend's error ends the whole get, as in nutcracker:
				// pass the error on.
				if bytes.HasPrefix(line, []byte("SERVER_ERROR")) || bytes.HasPrefix(line, []byte("CLIENT_ERROR")) || string(line) == "ERROR\r\n" {
					return bytes.Clone(line)
				}
				return s.badReply()
			}
			v, err := memcache.ParseValueLine(bytes.TrimRight(line, "\r\n"))
			end := eol + 1 + v.Bytes + 2
			if err != nil || end > len(r) || !bytes.HasSuffix(r[:end], []byte("\r\n")) {
				return s.badReply()
			}
			blocks[string(v.Key)] = append(blocks[string(v.Key)], r[:end])
			r = r[end:]
		}
	}
	var out []byte
	for _, k := range req.Keys {
		if q := blocks[string(k)]; len(q) > 0 {
			out = append(out, q[0]...)
			blocks[string(k)] = q[1:]
		}
	}
	return append(out, "END\r\n"...)
}

// badReply answers a get whose backend reply cannot be framed: the client
// gets an error, not another key's data.
func (s *SlowPath) badReply() []byte {
	s.st.errors.Add(1)
	return []byte("SERVER_ERROR bad reply from backend\r\n")
}
