package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/bench"
	"github.com/xdplab/xdplab/lab/peer"
)

// BenchmarkProxyVsNutcracker: client → XDP proxy → 3 backends vs client →
// nutcracker → the same 3 backends, on veth pairs, driven by the same
// lab/bench client and workload in alternating rounds of one run: UDP to
// the XDP proxy, TCP to nutcracker (which serves clients over TCP only),
// each socket with the same number of requests in flight (pipelined on
// TCP, as nutcracker's clients do). It reports medians of throughput and
// p99 latency and their ratios, with memcached as the backends and with
// our XDP stores, at several client shapes (sockets × requests in flight
// each): nutcracker's one thread saturates early, the XDP path scales
// with the client, so one shape alone would say more about the client
// than about either proxy. XDPLAB_BENCH_SOCKETS or _INFLIGHT pick one
// shape.
//
// One call of the body is a whole comparison, whatever b.N: run it with
// `go test -run '^$' -bench ProxyVsNutcracker -benchtime 1x ./lab/proxy`
// (make bench runs it too). The XDPLAB_BENCH_* variables tune it (see
// bench.Knobs); XDPLAB_BENCH_JSON gets every result.
func BenchmarkProxyVsNutcracker(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	knobs := bench.Knobs{Rounds: 3, Round: 2 * time.Second}
	w := bench.DefaultWorkload()
	w.KeyPrefix = "cmp:"
	if err := bench.ReadKnobs(&knobs, &w); err != nil {
		b.Fatal(err)
	}
	shapes := [][2]int{{2, 32}, {4, 16}, {8, 16}}
	if os.Getenv("XDPLAB_BENCH_SOCKETS")+os.Getenv("XDPLAB_BENCH_INFLIGHT") != "" {
		shapes = [][2]int{{w.Sockets, w.InFlight}}
	}
	var all []*bench.Result
	for _, kind := range backendKinds {
		b.Run(kind.name+"-backends", func(b *testing.B) {
			l := newProxyLab(b, kind)
			proxyHost, client := l.topo.Host("proxy"), l.topo.Host("client")
			ncListen := netip.AddrPortFrom(l.listen.Addr(), 22121)
			var backends []string
			for _, h := range l.backends {
				backends = append(backends, netip.AddrPortFrom(h.IPv4(), DefaultPort).String())
			}
			nc, err := peer.StartNutcracker(b.Context(), proxyHost, ncListen, backends, peer.NutcrackerOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { nc.Stop() })

			for _, shape := range shapes {
				w := w
				w.Sockets, w.InFlight = shape[0], shape[1]
				b.Run(fmt.Sprintf("%dx%d", w.Sockets, w.InFlight), func(b *testing.B) {
					before, err := l.p.Stats()
					if err != nil {
						b.Fatal(err)
					}
					// Named for the backends too, so results of both kinds can
					// share one JSON file (the kernel matrix reads it).
					xdp, ncName := "xdp-proxy→"+kind.name, "nutcracker→"+kind.name
					targets := []bench.Target{
						{Name: xdp, Addr: l.listen.String(), Network: "udp", Dial: client.Dial},
						{Name: ncName, Addr: ncListen.String(), Network: "tcp", Dial: client.Dial},
					}
					ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
					defer cancel()
					cmp, err := bench.Compare(ctx, targets, w, knobs.Rounds, ncName)
					if err != nil {
						b.Fatal(err)
					}
					all = append(all, cmp.All()...)
					after, err := l.p.Stats()
					if err != nil {
						b.Fatal(err)
					}
					// A proxy benchmark is about XDP only if XDP forwarded the
					// requests: say how many went to the slow path instead.
					fwd, slow := after.XDP.Forwarded-before.XDP.Forwarded, after.XDP.Slow-before.XDP.Slow
					fmt.Printf("\n### %s: %s, %d-byte keys, %d-byte values, %d keys, %d sockets × %d in flight, %v per round\n\n%s\nXDP proxy: %d requests forwarded in XDP, %d to the slow path (incl. preload)\n\n",
						b.Name(), w.String()[:strings.Index(w.String(), " k")], w.KeySize, w.ValueSize, w.Keys, w.Sockets, w.InFlight, knobs.Round, cmp.Markdown(), fwd, slow)
					if slow > 0 {
						b.Logf("the proxy handed %d of %d requests to its slow path", slow, slow+fwd)
					}
					b.ReportMetric(0, "ns/op") // one op is the whole comparison
					b.ReportMetric(cmp.Median(xdp, bench.Ops), "xdp-ops/s")
					b.ReportMetric(cmp.Median(ncName, bench.Ops), "nutcracker-ops/s")
					b.ReportMetric(cmp.Ratio(xdp, bench.Ops), "xdp/nutcracker-ops")
					b.ReportMetric(cmp.Median(xdp, bench.P99), "xdp-p99-us")
					b.ReportMetric(cmp.Median(ncName, bench.P99), "nutcracker-p99-us")
					b.ReportMetric(cmp.Ratio(xdp, bench.P99), "xdp/nutcracker-p99")
				})
			}
		})
	}
	if knobs.JSON != "" {
		if err := bench.WriteJSON(knobs.JSON, all); err != nil {
			b.Error(err)
		}
	}
}
