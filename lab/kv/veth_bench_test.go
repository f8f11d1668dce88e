package kv

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/bench"
	"github.com/xdplab/xdplab/lab/bench/reflector"
	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

// BenchmarkVethStoreVsMemcached drives the store and memcached (UDP) over
// veth pairs with the same lab/bench client and workload, alternating
// several rounds in one run so that load from elsewhere on the machine
// hits both alike, and reports medians and the ratio store/memcached.
//
// It is a benchmark, not a test, so `go test ./...` skips it; it needs root.
// One call of the body is a whole comparison, whatever b.N: run it with
// `go test -run '^$' -bench VethStore -benchtime 1x ./lab/kv` (make bench
// runs it too). The XDPLAB_BENCH_* variables tune it (see bench.Knobs;
// keys are 16 bytes).
//
// Topology: client — kv (the store: XDP native on kv's veth end, the Go slow
// path listening on the same port) and client — mc (memcached 1.6 in its
// own namespace, nothing attached: memcached as deployed). A third target,
// "memcached+xdp", is memcached in kv's namespace on another port, behind
// the store's program (which passes its packets): what XDP on the path
// costs a server that does not use it. The fourth, "reflector", is
// client — rf with bpf/reflect.bpf.c on rf's end (lab/bench/reflector): it
// answers every GET with the bytes a store hit gives and keeps no state, the
// ceiling the client and the path allow, so store ÷ reflector says how near
// the store runs to it. The client's ends carry XDP_PASS, which XDP_TX on
// veth needs; replies of all four cross it. Every target runs with the
// pinned client (the default) and again, as NAME/netpoll-client, with the
// first one (bench.ClientNetpoll), alternating in the same rounds.
func BenchmarkVethStoreVsMemcached(b *testing.B) {
	knobs := bench.Knobs{Rounds: 3, Round: 2 * time.Second}
	w0 := bench.DefaultWorkload()
	if err := bench.ReadKnobs(&knobs, &w0); err != nil {
		b.Fatal(err)
	}
	topo := netlab.ForTest(b, netlab.Spec{
		Hosts: []netlab.HostSpec{
			// GRO on the client's ends, as on a NIC: the pinned
			// client takes a batch's replies as one train.
			{Name: "client", Role: "client", XDPPass: true, GRO: true},
			{Name: "kv", Role: "kv"},
			{Name: "mc", Role: "memcached"},
			{Name: "rf", Role: "kv"},
		},
		Links: []netlab.LinkSpec{{A: "client", B: "kv"}, {A: "client", B: "mc"}, {A: "client", B: "rf"}},
	})
	client, kvh, mch, rfh := topo.Host("client"), topo.Host("kv"), topo.Host("mc"), topo.Host("rf")

	o := loadForTest(b, Config{})
	l, err := netlab.AttachXDP(kvh, kvh.Dev(), o.Program())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	srv := NewServer(o)
	if err := kvh.Do(func() error { return srv.Listen(kvh.IPv4().String()) }); err != nil {
		b.Fatal(err)
	}
	background.Serve(b, srv.Serve)
	ctx := b.Context()
	const mcPort = 11311
	for _, h := range []*netlab.Host{mch, kvh} {
		mc, err := peer.StartMemcached(ctx, h, peer.MemcachedOptions{Port: mcPort, Addrs: []netip.Addr{h.IPv4()}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { mc.Stop() })
	}

	// The reflector: the ceiling, answering every GET with the bytes a
	// store hit of the workload's value gives (see lab/bench/reflector).
	rf := reflector.ForTest(b, rfh, reflector.Config{Port: o.Config().Port, KeySize: w0.KeySize, Value: bench.Value(w0.ValueSize)})

	dial := client.Dial
	targets := []bench.Target{
		{Name: "store", Addr: netip.AddrPortFrom(kvh.IPv4(), o.Config().Port).String(), Dial: dial},
		{Name: "reflector", Addr: netip.AddrPortFrom(rfh.IPv4(), o.Config().Port).String(), Dial: dial},
		{Name: "memcached", Addr: netip.AddrPortFrom(mch.IPv4(), mcPort).String(), Dial: dial},
		{Name: "memcached+xdp", Addr: netip.AddrPortFrom(kvh.IPv4(), mcPort).String(), Dial: dial},
	}
	// The first client (a goroutine per socket through the netpoller)
	// against the reflector, the store and memcached: what the pinned
	// client (the default) gains, side by side in the same rounds.
	for _, t := range targets[:3] {
		t.Name, t.Client = t.Name+"/netpoll-client", bench.ClientNetpoll
		targets = append(targets, t)
	}

	var all []*bench.Result
	for _, wl := range []struct {
		name     string
		getRatio float64
	}{{"get", 1}, {"mix90", 0.9}} {
		b.Run(wl.name, func(b *testing.B) {
			w := w0
			w.GetRatio, w.KeyPrefix = wl.getRatio, wl.name+":"
			before := xdpCounters(b, srv)
			dropsBefore := udpDrops(b, client, kvh, mch, rfh)
			rfBefore, err := rf.Stats()
			if err != nil {
				b.Fatal(err)
			}
			cmp, err := bench.Compare(ctx, targets, w, knobs.Rounds, "memcached")
			if err != nil {
				b.Fatal(err)
			}
			all = append(all, cmp.All()...)
			var table strings.Builder
			table.WriteString(cmp.Markdown())
			after := xdpCounters(b, srv)
			// Requests the program passed to the slow path instead of
			// answering: a store benchmark is only about XDP if this is 0.
			tx, pass := after["xdp_tx"]-before["xdp_tx"], after["xdp_pass"]-before["xdp_pass"]
			fmt.Fprintf(&table, "\nstore: %d requests answered in XDP, %d passed to the slow path (incl. preload), %d dropped\n",
				tx, pass, after["xdp_drop"]-before["xdp_drop"])
			// Lost requests: UDP datagrams dropped for a full receive
			// buffer, per namespace, tell whether a socket overflowed.
			rfAfter, err := rf.Stats()
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(&table, "reflector: %d GETs and %d SETs answered, %d passed\n",
				rfAfter.Gets-rfBefore.Gets, rfAfter.Sets-rfBefore.Sets, rfAfter.Passed-rfBefore.Passed)
			table.WriteString(cmp.Goals("store", "memcached", "reflector"))
			table.WriteString("client: pinned ÷ netpoll ops/s (goal ≥ 1.5× against the reflector):")
			for _, t := range []string{"reflector", "store", "memcached"} {
				fmt.Fprintf(&table, " %s %.2f×", t, cmp.Median(t, bench.Ops)/cmp.Median(t+"/netpoll-client", bench.Ops))
			}
			table.WriteString("\n")
			dropsAfter := udpDrops(b, client, kvh, mch, rfh)
			table.WriteString("UDP receive-buffer drops during the runs:")
			for _, h := range []*netlab.Host{client, kvh, mch, rfh} {
				fmt.Fprintf(&table, " %s %d", h.Name, dropsAfter[h.Name]-dropsBefore[h.Name])
			}
			table.WriteString("\n")
			// Printed rather than logged: go test cuts benchmark logs
			// to 10 lines unless -v.
			fmt.Printf("\n### %s: %s, %d-byte keys, %d-byte values, %d keys, %d sockets × %d in flight, %v per round\n\n%s\n",
				b.Name(), w.String()[:strings.Index(w.String(), " k")], w.KeySize, w.ValueSize, w.Keys, w.Sockets, w.InFlight, knobs.Round, table.String())
			if pass > 0 {
				b.Logf("the store passed %d of %d requests to its slow path: the store numbers are not XDP's", pass, pass+tx)
			}
			b.ReportMetric(float64(tx)/float64(max(1, tx+pass)), "store-xdp-frac")
			b.ReportMetric(0, "ns/op") // one op is the whole comparison
			b.ReportMetric(cmp.Median("store", bench.Ops), "store-ops/s")
			b.ReportMetric(cmp.Median("memcached", bench.Ops), "memcached-ops/s")
			b.ReportMetric(cmp.Ratio("store", bench.Ops), "store/memcached")
			b.ReportMetric(cmp.Median("reflector", bench.Ops), "reflector-ops/s")
			b.ReportMetric(cmp.Median("store", bench.Ops)/cmp.Median("reflector", bench.Ops), "store/reflector")
			b.ReportMetric(cmp.Median("reflector", bench.Ops)/cmp.Median("reflector/netpoll-client", bench.Ops), "pinned/netpoll-client")
			b.ReportMetric(cmp.Median("store", bench.P50), "store-p50-us")
			b.ReportMetric(cmp.Median("store", bench.P99), "store-p99-us")
			b.ReportMetric(cmp.Median("memcached", bench.P50), "memcached-p50-us")
			b.ReportMetric(cmp.Median("memcached", bench.P99), "memcached-p99-us")
		})
	}
	if knobs.JSON != "" {
		if err := bench.WriteJSON(knobs.JSON, all); err != nil {
			b.Error(err)
		}
	}
}

// xdpCounters reads the store's xdp_* stats.
func xdpCounters(b *testing.B, srv *Server) map[string]uint64 {
	st, err := srv.Stats()
	if err != nil {
		b.Fatal(err)
	}
	m := map[string]uint64{}
	for _, kv := range st {
		if strings.HasPrefix(kv[0], "xdp_") {
			m[kv[0]], _ = strconv.ParseUint(kv[1], 10, 64)
		}
	}
	return m
}

// udpDrops reads Udp RcvbufErrors from each host's namespace.
func udpDrops(b *testing.B, hosts ...*netlab.Host) map[string]uint64 {
	m := map[string]uint64{}
	for _, h := range hosts {
		err := h.Do(func() error {
			// thread-self: /proc/self/net would show the process's
			// namespace, not this thread's.
			data, err := os.ReadFile("/proc/thread-self/net/snmp")
			if err != nil {
				return err
			}
			var names []string
			for _, line := range strings.Split(string(data), "\n") {
				f := strings.Fields(line)
				if len(f) == 0 || f[0] != "Udp:" {
					continue
				}
				if names == nil {
					names = f
					continue
				}
				for i, v := range f {
					if i < len(names) && names[i] == "RcvbufErrors" {
						m[h.Name], _ = strconv.ParseUint(v, 10, 64)
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return m
}
