package bench_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/bench"
	"github.com/xdplab/xdplab/lab/bench/reflector"
	"github.com/xdplab/xdplab/lab/netlab"
)

// reflectorLab is a client — rf veth pair with the reflector on rf's end
// (and XDP_PASS on the client's, which XDP_TX on veth needs).
func reflectorLab(t testing.TB, w bench.Workload) (*netlab.Host, netip.AddrPort, *reflector.Reflector) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	netlab.RemoveMemlock()
	topo := netlab.ForTest(t, netlab.Spec{
		Hosts: []netlab.HostSpec{{Name: "client", Role: "client", XDPPass: true, GRO: true}, {Name: "rf", Role: "kv"}},
		Links: []netlab.LinkSpec{{A: "client", B: "rf"}},
	})
	client, rfh := topo.Host("client"), topo.Host("rf")
	const port = 11211
	rf := reflector.ForTest(t, rfh, reflector.Config{Port: port, KeySize: w.KeySize, Value: bench.Value(w.ValueSize)})
	return client, netip.AddrPortFrom(rfh.IPv4(), port), rf
}

// TestClientsAgainstReflector: both client engines, over a veth pair to
// the reflector, get every GET answered with the exact value (the
// reflector's reply is a store hit's bytes), count SETs, and lose nothing.
// Correctness only: the rates are the benchmark's business.
func TestClientsAgainstReflector(t *testing.T) {
	w := bench.DefaultWorkload()
	w.Duration, w.Warmup = 300*time.Millisecond, 50*time.Millisecond
	w.Timeout = time.Second
	client, addr, rf := reflectorLab(t, w)
	for _, c := range []string{bench.ClientPinned, bench.ClientNetpoll} {
		for _, ratio := range []float64{1, 0.5} {
			t.Run(fmt.Sprintf("%s/get%.0f%%", c, 100*ratio), func(t *testing.T) {
				w := w
				w.GetRatio = ratio
				before, _ := rf.Stats()
				r, err := bench.Run(t.Context(), bench.Target{Addr: addr.String(), Dial: client.Dial, Client: c}, w)
				if err != nil {
					t.Fatal(err)
				}
				after, _ := rf.Stats()
				if r.Client != c || r.Requests == 0 || r.Errors != 0 || r.Lost != 0 || r.Late != 0 || r.Misses != 0 || r.Hits != r.Gets || r.Gets+r.Sets != r.Requests {
					t.Errorf("%+v", r)
				}
				if ratio < 1 && r.Sets == 0 {
					t.Errorf("no SETs in a 50%% mix")
				}
				if after.Passed != before.Passed {
					t.Errorf("the reflector passed %d requests", after.Passed-before.Passed)
				}
			})
		}
	}
}

// BenchmarkVethClients compares the two client engines against the
// reflector in alternating rounds: `go test -run '^$' -bench VethClients
// -benchtime 1x ./lab/bench` (the XDPLAB_BENCH_* knobs apply).
func BenchmarkVethClients(b *testing.B) {
	knobs := bench.Knobs{Rounds: 3, Round: 2 * time.Second}
	w := bench.DefaultWorkload()
	if err := bench.ReadKnobs(&knobs, &w); err != nil {
		b.Fatal(err)
	}
	client, addr, _ := reflectorLab(b, w)
	targets := []bench.Target{
		{Name: "pinned", Addr: addr.String(), Dial: client.Dial, Client: bench.ClientPinned},
		{Name: "netpoll", Addr: addr.String(), Dial: client.Dial, Client: bench.ClientNetpoll},
	}
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	cmp, err := bench.Compare(ctx, targets, w, knobs.Rounds, "netpoll")
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\n### %s: %v\n\n%s\n", b.Name(), w, cmp.Markdown())
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(cmp.Median("pinned", bench.Ops), "pinned-ops/s")
	b.ReportMetric(cmp.Median("netpoll", bench.Ops), "netpoll-ops/s")
	b.ReportMetric(cmp.Ratio("pinned", bench.Ops), "pinned/netpoll")
}
