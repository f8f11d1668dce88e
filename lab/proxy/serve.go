package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// ServeConfig is a whole proxy: the program's fixed configuration, the
// backends, and the tuning of health probing and the slow path.
type ServeConfig struct {
	Config
	Backends []Backend
	Health   HealthConfig
	Slow     SlowConfig
}

// Proxy is the XDP program with its ring kept up to date by health
// probing, and the slow path serving what XDP passes. Attach Program()
// to the interfaces yourself (the caller knows which and how).
type Proxy struct {
	Objects *Objects
	Slow    *SlowPath
	health  *Health
	cfg     ServeConfig

	mu   sync.Mutex
	ring *Ring
	live []bool

	unwatch chan struct{} // closed by Close: ends WatchFIB
}

// Start loads the program, writes the ring with every backend live, and
// opens the probe and slow-path sockets in the calling thread's network
// namespace (the proxy's).
func Start(cfg ServeConfig) (*Proxy, error) {
	if len(cfg.Backends) == 0 {
		return nil, errors.New("proxy: no backends")
	}
	o, err := Load(cfg.Config)
	if err != nil {
		return nil, err
	}
	cfg.Config = o.Config()
	p := &Proxy{Objects: o, cfg: cfg}
	if p.ring, err = o.SetBackends(cfg.Backends, nil); err != nil {
		o.Close()
		return nil, err
	}
	for range cfg.Backends {
		p.live = append(p.live, true)
	}
	if p.health, err = NewHealth(cfg.Backends, cfg.Health); err != nil {
		o.Close()
		return nil, err
	}
	var listen []netip.AddrPort
	for _, a := range []netip.Addr{cfg.Listen4, cfg.Listen6} {
		if a.IsValid() {
			listen = append(listen, netip.AddrPortFrom(a, cfg.Port))
		}
	}
	if p.Slow, err = NewSlowPath(listen, cfg.Backends, p.ring, cfg.Slow); err != nil {
		p.health.conn.Close()
		o.Close()
		return nil, err
	}
	// The program caches each backend's next hop; routing events in this
	// namespace void the cache.
	p.unwatch = make(chan struct{})
	if err := o.WatchFIB(p.unwatch, nil); err != nil {
		close(p.unwatch)
		p.Slow.Close()
		p.health.conn.Close()
		o.Close()
		return nil, fmt.Errorf("proxy: watch routing events: %w", err)
	}
	return p, nil
}

// Run probes the backends and serves the slow path until ctx is done.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() {
		errc <- p.health.Run(ctx, func(live []bool) {
			r, err := p.Objects.SetBackends(p.cfg.Backends, live)
			if err != nil {
				// The old ring stays; the next change tries again.
				return
			}
			p.Slow.SetRing(r)
			p.mu.Lock()
			p.ring, p.live = r, live
			p.mu.Unlock()
		})
	}()
	go func() { errc <- p.Slow.Serve(ctx) }()
	err := <-errc
	cancel()
	return errors.Join(err, <-errc)
}

// Ring is the ring both paths route by now.
func (p *Proxy) Ring() *Ring {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ring
}

// Live is which backends are in the ring now.
func (p *Proxy) Live() []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.live)
}

// Backends are the proxy's backends, in ring index order.
func (p *Proxy) Backends() []Backend { return slices.Clone(p.cfg.Backends) }

// Close closes the sockets and releases the program (detach it first).
func (p *Proxy) Close() error {
	close(p.unwatch)
	return errors.Join(p.Slow.Close(), p.Objects.Close())
}

// AllStats is everything the proxy counts.
type AllStats struct {
	XDP  Stats
	Slow SlowStats
	Live []bool
}

// Stats reads the XDP and slow-path counters.
func (p *Proxy) Stats() (AllStats, error) {
	x, err := p.Objects.Stats()
	if err != nil {
		return AllStats{}, fmt.Errorf("proxy: stats: %w", err)
	}
	return AllStats{XDP: x, Slow: p.Slow.Stats(), Live: p.Live()}, nil
}
