package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

func TestDecideLive(t *testing.T) {
	now := time.Unix(1000, 0)
	last := []time.Time{now, now.Add(-700 * time.Millisecond), now.Add(-701 * time.Millisecond), now.Add(time.Second)}
	if got, want := decideLive(now, last, 700*time.Millisecond), []bool{true, true, false, true}; !slices.Equal(got, want) {
		t.Errorf("decideLive = %v, want %v", got, want)
	}
}

// healthLab: memcached on kv1 and kv2, a Health in the proxy's namespace.
type healthLab struct {
	t        *testing.T
	topo     *netlab.Topology
	backends []Backend
	mcs      []*peer.Process
	events   chan []bool
	h        *Health
}

func startHealthLab(t *testing.T, extra ...Backend) *healthLab {
	l := &healthLab{t: t, topo: netlab.ForTest(t, netlab.StarSpec(2, netlab.Options{})), events: make(chan []bool, 64)}
	for _, kv := range l.topo.Backends() {
		l.backends = append(l.backends, Backend{Server: Server{Host: kv.IPv4().String(), Port: 11211, Weight: 1}, IPv4: kv.IPv4(), IPv6: kv.IPv6()})
		l.mcs = append(l.mcs, l.startMemcached(kv))
	}
	l.backends = append(l.backends, extra...)
	if err := l.topo.Host("proxy").Do(func() (err error) { l.h, err = NewHealth(l.backends, HealthConfig{}); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.h.Run(ctx, func(live []bool) { l.events <- live }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return l
}

func (l *healthLab) startMemcached(kv *netlab.Host) *peer.Process {
	mc, err := peer.StartMemcached(context.Background(), kv, peer.MemcachedOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { mc.Stop() })
	return mc
}

// waitFor returns once Health reports a live set for which ok holds, and
// how long that took. The deadline only stops a broken prober from hanging
// the test; how fast it was is logged, not judged.
func (l *healthLab) waitFor(what string, ok func([]bool) bool) time.Duration {
	l.t.Helper()
	start := time.Now()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case live := <-l.events:
			if ok(live) {
				return time.Since(start)
			}
		case <-deadline:
			l.t.Fatalf("%s: no such change in 30s; live now %v", what, l.h.Live())
		}
	}
}

// TestHealthMemcached kills a real memcached and restarts it: Health takes
// it out and puts it back, and never touches the other.
func TestHealthMemcached(t *testing.T) {
	// A third backend where nothing listens: out once the timeout passes.
	ghost := Backend{Server: Server{Host: "198.18.2.2", Port: 11999, Weight: 1}, IPv4: mustAddr("198.18.2.2")}
	l := startHealthLab(t, ghost)
	d := l.waitFor("the ghost goes out", func(live []bool) bool { return !live[2] })
	t.Logf("a backend that never answered went out after %v", d)
	if got := l.h.Live(); !got[0] || !got[1] {
		t.Fatalf("live %v: a memcached that answers was taken out", got)
	}

	if err := l.mcs[1].Stop(); err != nil {
		t.Fatal(err)
	}
	d = l.waitFor("kv2 goes out", func(live []bool) bool { return !live[1] })
	t.Logf("killed memcached on kv2: out after %v", d)
	if got := l.h.Live(); !got[0] || got[2] {
		t.Errorf("live %v after killing kv2, want [true false false]", got)
	}

	l.mcs[1] = l.startMemcached(l.topo.Host("kv2"))
	d = l.waitFor("kv2 comes back", func(live []bool) bool { return live[1] })
	t.Logf("restarted memcached on kv2: back after %v", d)
	if got := l.h.Live(); fmt.Sprint(got) != "[true true false]" {
		t.Errorf("live %v after restarting kv2, want [true true false]", got)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestHealthRequestID: replies count only if they carry a probe's request
// id. A backend that answers every probe with another id (as a datagram
// spoofed from its address would) goes out; answering with the probe's id
// brings it back.
func TestHealthRequestID(t *testing.T) {
	be, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	port := uint16(be.LocalAddr().(*net.UDPAddr).Port)
	h, err := NewHealth([]Backend{{Server: Server{Host: "127.0.0.1", Port: port, Weight: 1}, IPv4: mustAddr("127.0.0.1")}},
		HealthConfig{Interval: 40 * time.Millisecond, Timeout: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := background.Serve(t, func(ctx context.Context) error { return h.Run(ctx, nil) })
	defer stop()

	// The backend answers each probe, with an id off by delta.
	var delta atomic.Int32
	delta.Store(1)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := be.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			hdr, err := memcache.ParseHeader(buf[:n])
			if err != nil {
				continue
			}
			hdr.RequestID += uint16(delta.Load())
			be.WriteToUDPAddrPort(append(memcache.AppendHeader(nil, hdr), "VERSION 1.6.18\r\n"...), from)
		}
	}()
	wait := func(what string, want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if h.Live()[0] == want {
				return
			}
		}
		t.Fatalf("%s: live %v after 5 s", what, h.Live())
	}
	wait("answers with the wrong request id", false)
	delta.Store(0)
	wait("answers with the probe's request id", true)
}
