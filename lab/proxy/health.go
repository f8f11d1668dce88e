package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
)

// HealthConfig tunes Health; zero values pick the defaults.
type HealthConfig struct {
	// Interval between probes of each backend; default 200ms.
	Interval time.Duration
	// Timeout is the silence after which a backend is out; default 700ms.
	// A backend is out at most Timeout+Interval/2 after its last answer,
	// and back at most Interval+Interval/2 (plus a round trip) after it
	// answers again: both within the second the issue asks for.
	Timeout time.Duration
}

func (c *HealthConfig) normalize() {
	if c.Interval <= 0 {
		c.Interval = 200 * time.Millisecond
	}
	if c.Timeout <= 0 {
		c.Timeout = 700 * time.Millisecond
	}
}

// Health probes backends with memcached's "version" over UDP and tracks
// which are live. It starts with all of them live, as nutcracker does.
type Health struct {
	cfg      HealthConfig
	backends []Backend
	dst      []netip.AddrPort
	conn     *net.UDPConn

	mu     sync.Mutex
	lastOK []time.Time
	live   []bool
	// ids are the request ids of the last two probe rounds, random: only
	// a reply carrying one counts, so a datagram spoofed from a backend's
	// address cannot keep a dead backend in without seeing the probes.
	ids [2]uint16
}

// NewHealth opens the probe socket in the calling thread's network
// namespace (the proxy's): one unconnected UDP socket for all backends, so
// that a dead backend's ICMP errors never stick to it.
func NewHealth(backends []Backend, cfg HealthConfig) (*Health, error) {
	cfg.normalize()
	h := &Health{cfg: cfg, backends: slices.Clone(backends)}
	for _, b := range backends {
		d, err := b.Dst()
		if err != nil {
			return nil, fmt.Errorf("health: %w", err)
		}
		h.dst = append(h.dst, d)
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("health: probe socket: %w", err)
	}
	h.conn = conn
	now := time.Now()
	for range backends {
		h.lastOK = append(h.lastOK, now)
		h.live = append(h.live, true)
	}
	return h, nil
}

// Live returns which backends are live now.
func (h *Health) Live() []bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.live)
}

// Run probes until ctx is done, then closes the socket. It calls
// onChange, from its own goroutine, with the new live set whenever one
// changes.
func (h *Health) Run(ctx context.Context, onChange func(live []bool)) error {
	go func() {
		<-ctx.Done()
		h.conn.Close()
	}()
	readDone := make(chan error, 1)
	go func() { readDone <- h.read() }()

	tick := time.NewTicker(h.cfg.Interval / 2)
	defer tick.Stop()
	var lastProbe time.Time
	for {
		select {
		case <-ctx.Done():
			<-readDone
			return nil
		case err := <-readDone:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case now := <-tick.C:
			if now.Sub(lastProbe) >= h.cfg.Interval-h.cfg.Interval/4 {
				lastProbe = now
				id := probeID()
				h.mu.Lock()
				h.ids = [2]uint16{id, h.ids[0]}
				h.mu.Unlock()
				msg := memcache.AppendHeader(nil, memcache.Header{RequestID: id, Total: 1})
				msg = append(msg, "version\r\n"...)
				for _, d := range h.dst {
					// A send error (no route, a refused port reported
					// back) is the same as silence.
					_, _ = h.conn.WriteToUDPAddrPort(msg, d)
				}
			}
			h.mu.Lock()
			next := decideLive(now, h.lastOK, h.cfg.Timeout)
			changed := !slices.Equal(next, h.live)
			h.live = next
			h.mu.Unlock()
			if changed && onChange != nil {
				onChange(slices.Clone(next))
			}
		}
	}
}

// read records each backend's answers until the socket closes.
func (h *Health) read() error {
	buf := make([]byte, 2048)
	for {
		n, from, err := h.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("health: read: %w", err)
		}
		hdr, err := memcache.ParseHeader(buf[:n])
		if err != nil || !bytes.HasPrefix(buf[memcache.HeaderLen:n], []byte("VERSION ")) {
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		now := time.Now()
		h.mu.Lock()
		if hdr.RequestID == h.ids[0] || hdr.RequestID == h.ids[1] {
			for i, d := range h.dst {
				if d == from {
					h.lastOK[i] = now
				}
			}
		}
		h.mu.Unlock()
	}
}

// probeID is a request id an off-path sender cannot predict.
func probeID() uint16 {
	var b [2]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint16(b[:])
}

// decideLive: a backend is live if it answered within timeout of now.
func decideLive(now time.Time, lastOK []time.Time, timeout time.Duration) []bool {
	live := make([]bool, len(lastOK))
	for i, t := range lastOK {
		live[i] = now.Sub(t) <= timeout
	}
	return live
}
