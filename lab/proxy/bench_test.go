package proxy

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/internal/rerun"
	"github.com/xdplab/xdplab/lab/internal/testutils"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/verifier"
)

// verifierBudget bounds the instructions the verifier may walk for the
// proxy: a tenth of its limit. Crossing it means a loop's paths stopped
// converging (see ring_lookup), which on an older kernel is a rejection.
const verifierBudget = 100_000

// TestVerifierStats records what the verifier did with the proxy, for the
// kernel-matrix report, and holds it to the budget.
func TestVerifierStats(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	o, err := Load(Config{Listen4: netip.MustParseAddr("198.18.1.1"), Listen6: netip.MustParseAddr("fd00:0:0:1::1")})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	st, err := bpfload.Stats("proxy_xdp", "", o.Program())
	if err != nil {
		t.Error(err)
	}
	if st.VerifiedInsn > verifierBudget {
		t.Errorf("verifier walked %d instructions, budget %d", st.VerifiedInsn, verifierBudget)
	}
	testutils.RecordVerifierStats(t, "proxy", []bpfload.ProgramStats{st})
}

// TestFeatures probes every helper the proxy's program calls: it picks no
// path by them but one, so each must be there on every kernel we ship to;
// bpf_xdp_load_bytes (5.18) only copies the request faster where it is.
func TestFeatures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	spec, err := loadProxy()
	if err != nil {
		t.Fatal(err)
	}
	fs, err := verifier.ProbeHelpers(spec)
	if err != nil {
		t.Fatal(err)
	}
	have, err := bpfload.HaveXDPBytes()
	if err != nil {
		t.Fatal(err)
	}
	name, found := verifier.HelperFeature(ebpf.XDP, asm.FnXdpLoadBytes), false
	for i, f := range fs {
		if f.Name == name {
			found = true
			fs[i].Since, fs[i].Path = "5.18", "a copy loop"
			if have {
				fs[i].Path = "one helper call"
			}
		}
	}
	if !found {
		t.Errorf("the proxy no longer calls %s: update this test", name)
	}
	testutils.CheckFeatures(t, "proxy", fs)
}

// BenchmarkXDPRoute: ns per request through BPF_PROG_TEST_RUN. ns/req is
// cold, as the kernel times one run (Repeat 1: a routed frame is
// rewritten, so a repeat would see the backend's address); warm-ns/req is
// the median of 5 BPF_PROG_TEST_RUNs of 20,000 runs each through
// lab/internal/rerun's harness, which puts the request back before each run
// (its own cost, harness-ns/req, subtracted; lab/kv's bench_test.go says
// more). Runs in the proxy's namespace, from its loopback, so the FIB
// lookups are real.
//
//	go test ./lab/proxy -run '^$' -bench 'XDPRoute/Get/key=16$' -benchtime 2000x -count 3
func BenchmarkXDPRoute(b *testing.B) {
	topo := netlab.ForTest(b, netlab.StarSpec(3, netlab.Options{}))
	proxy := topo.Host("proxy")
	fromCli := proxy.IfaceTo("client")
	o, err := Load(Config{Listen4: fromCli.IPv4.Addr(), Listen6: fromCli.IPv6.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	var bs []Backend
	for _, kv := range topo.Backends() {
		bs = append(bs, Backend{Server: Server{Host: kv.IPv4().String(), Port: 11211, Weight: 1}, IPv4: kv.IPv4(), IPv6: kv.IPv6()})
	}
	ring, err := o.SetBackends(bs, nil)
	if err != nil {
		b.Fatal(err)
	}
	// Keys that all live on backend 0, of a given length.
	keysOn0 := func(n, length int) []string {
		var ks []string
		for i := 0; len(ks) < n; i++ {
			k := fmt.Sprintf("%0*d", length, i)
			if ring.Lookup([]byte(k)) == 0 {
				ks = append(ks, k)
			}
		}
		return ks
	}
	req := func(v6 bool, payload string) []byte {
		src, dst := fromCli.Peer.IPv4.Addr(), fromCli.IPv4.Addr()
		if v6 {
			src, dst = fromCli.Peer.IPv6.Addr(), fromCli.IPv6.Addr()
		}
		return frame.Datagram{SrcMAC: fromCli.Peer.MAC, DstMAC: fromCli.MAC, Src: netip.AddrPortFrom(src, 40000),
			Dst: netip.AddrPortFrom(dst, 11211), Total: 1, Payload: []byte(payload)}.Frame()
	}
	k16 := keysOn0(10, 16)
	k250 := keysOn0(1, 250)
	var spanning []string
	for i := 0; len(spanning) < 2; i++ {
		if k := fmt.Sprintf("s%d", i); ring.Lookup([]byte(k)) == len(spanning) {
			spanning = append(spanning, k)
		}
	}
	kv1 := topo.Host("kv1")
	reply := frame.Datagram{SrcMAC: kv1.Ifaces[0].MAC, DstMAC: kv1.Ifaces[0].Peer.MAC,
		Src: netip.AddrPortFrom(kv1.IPv4(), 11211), Dst: netip.AddrPortFrom(fromCli.Peer.IPv4.Addr(), 40000),
		Total: 1, Payload: []byte("VALUE " + k16[0] + " 0 4\r\nvvvv\r\nEND\r\n")}.Frame()
	// The client's first request records its flow, so the reply is ours.
	if err := proxy.Do(func() error {
		ret, _, err := o.Program().Benchmark(req(false, "get "+k16[0]+"\r\n"), 1, nil)
		if err == nil && ret != xdpRedirect {
			err = fmt.Errorf("first request: action %d", ret)
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"OtherTraffic", frame.Datagram{SrcMAC: fromCli.Peer.MAC, DstMAC: fromCli.MAC, Src: netip.AddrPortFrom(fromCli.Peer.IPv4.Addr(), 40000),
			Dst: netip.AddrPortFrom(kv1.IPv4(), 11211), Total: 1, Payload: []byte("get a\r\n")}.Frame(), xdpPass},
		{"Get/key=16", req(false, "get "+k16[0]+"\r\n"), xdpRedirect},
		{"Get/key=16/IPv6", req(true, "get "+k16[0]+"\r\n"), xdpRedirect},
		{"Get/key=250", req(false, "get "+k250[0]+"\r\n"), xdpRedirect},
		{"MultiGet/keys=10/one-backend", req(false, "get "+strings.Join(k16, " ")+"\r\n"), xdpRedirect},
		{"MultiGet/keys=2/spanning", req(false, "get "+strings.Join(spanning, " ")+"\r\n"), xdpPass},
		{"Set/key=16/value=100", req(false, "set "+k16[0]+" 0 0 100\r\n"+strings.Repeat("v", 100)+"\r\n"), xdpRedirect},
		{"Set/key=16/value=1000", req(false, "set "+k16[0]+" 0 0 1000\r\n"+strings.Repeat("v", 1000)+"\r\n"), xdpRedirect},
		{"Reply", reply, xdpRedirect},
	}
	// The flow records the interface the backend is behind (each routed
	// request sets it anew), and a reply counts only when it arrives there;
	// test runs arrive on the loopback, so for Reply the flow says the
	// loopback, or the reply would pass as spoofed.
	var fk proxyProxyFlow
	fk.Addr = fromCli.Peer.IPv4.Addr().As16() // ::ffff:a.b.c.d, as the program keys it
	fk.Port = 40000>>8 | 40000&0xff<<8        // network order
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if c.name == "Reply" {
				if err := o.objs.Flows.Update(&fk, uint32(1), ebpf.UpdateExist); err != nil {
					b.Fatalf("the first request's flow: %v", err)
				}
			}
			var total time.Duration
			err := proxy.Do(func() error {
				for i := 0; i < b.N; i++ {
					ret, d, err := o.Program().Benchmark(c.frame, 1, nil)
					if err != nil {
						return err
					}
					if ret != c.want {
						return fmt.Errorf("action %d, want %d", ret, c.want)
					}
					total += d
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/req")
			var w, h time.Duration
			if err := proxy.Do(func() (err error) {
				w, h, err = rerun.Warm(o.Program(), c.frame, c.want)
				return err
			}); err != nil {
				b.Logf("no warm figure: %v", err)
				return
			}
			b.ReportMetric(float64(w.Nanoseconds()), "warm-ns/req")
			b.ReportMetric(float64(h.Nanoseconds()), "harness-ns/req")
		})
	}
}
