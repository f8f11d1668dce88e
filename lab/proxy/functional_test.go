package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/internal/background"
	"github.com/xdplab/xdplab/lab/kv"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

// backendKind starts a memcached server on a backend host; stop kills it.
type backendKind struct {
	name  string
	start func(t testing.TB, h *netlab.Host) (stop func())
}

var backendKinds = []backendKind{
	{"memcached", func(t testing.TB, h *netlab.Host) func() {
		mc, err := peer.StartMemcached(t.Context(), h, peer.MemcachedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		stop := func() { once.Do(func() { mc.Stop() }) }
		t.Cleanup(stop)
		return stop
	}},
	{"kv", startKV},
}

// startKV serves our XDP store on h, in the XDP_PASS placeholder's place,
// as `lab kv serve` does.
func startKV(t testing.TB, h *netlab.Host) func() {
	// memcached's UDP behaviour, which the suite holds both backends to:
	// replies of any size (the store caps them at a datagram by default).
	o, err := kv.Load(kv.Config{Entries: 4096, UDPReplyMax: kv.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	srv := kv.NewServer(o)
	var took bool
	var detach func() error
	err = h.Do(func() error {
		var err error
		if took, err = netlab.TakeXDPPass(h.Dev()); err != nil {
			return err
		}
		l, _, err := o.Attach(h.Dev(), kv.ModeNative)
		if err != nil {
			return err
		}
		detach = l.Close
		return srv.Listen("")
	})
	if err != nil {
		if detach != nil {
			detach()
		}
		o.Close()
		t.Fatal(err)
	}
	stopServe := background.Serve(t, srv.Serve)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stopServe()
			detach()
			if took {
				if err := h.Do(func() error { return netlab.PutXDPPass(h.Dev()) }); err != nil {
					t.Errorf("put XDP_PASS back on %s: %v", h.Name, err)
				}
			}
			o.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// proxyLab is client → proxy → kv1..kv3 with the whole proxy running.
type proxyLab struct {
	topo     *netlab.Topology
	p        *Proxy
	listen   netip.AddrPort
	client   *memcache.Client
	stops    []func()
	backends []*netlab.Host
}

func newProxyLab(t testing.TB, kind backendKind) *proxyLab {
	topo := netlab.ForTest(t, netlab.StarSpec(3, netlab.Options{PeerXDP: true}))
	proxyHost, client := topo.Host("proxy"), topo.Host("client")
	fromCli := proxyHost.IfaceTo("client")
	l := &proxyLab{topo: topo, listen: netip.AddrPortFrom(fromCli.IPv4.Addr(), DefaultPort)}
	var backends []Backend
	for _, h := range topo.Backends() {
		l.stops = append(l.stops, kind.start(t, h))
		l.backends = append(l.backends, h)
		backends = append(backends, Backend{
			Server: Server{Host: h.IPv4().String(), Port: DefaultPort, Weight: 1},
			IPv4:   h.IPv4(), IPv6: h.IPv6(),
		})
	}
	err := proxyHost.Do(func() (err error) {
		l.p, err = Start(ServeConfig{
			Config:   Config{Listen4: fromCli.IPv4.Addr(), Listen6: fromCli.IPv6.Addr()},
			Backends: backends,
			// Generous, so that a loaded machine (CI runs packages and
			// VMs side by side) never ejects a live backend or times out
			// a forwarded request mid-comparison; ejection is still
			// tested, only later.
			Health: HealthConfig{Timeout: 2 * time.Second},
			Slow:   SlowConfig{Timeout: 5 * time.Second},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.p.Close() })
	for _, i := range proxyHost.Ifaces {
		lk, err := netlab.AttachXDP(proxyHost, i.Name, l.p.Objects.Program())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lk.Close() })
	}
	background.Serve(t, l.p.Run)
	if err := client.Do(func() (err error) { l.client, err = memcache.DialUDP(l.listen.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.client.Close() })
	return l
}

// direct opens a UDP client from the proxy host to backend i alone.
func (l *proxyLab) direct(t *testing.T, i int) *memcache.Client {
	var c *memcache.Client
	ap := netip.AddrPortFrom(l.backends[i].IPv4(), DefaultPort)
	if err := l.topo.Host("proxy").Do(func() (err error) { c, err = memcache.DialUDP(ap.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func do(t *testing.T, c *memcache.Client, raw string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r, err := c.Do(ctx, []byte(raw))
	if err != nil {
		t.Fatalf("%.60q: %v", raw, err)
	}
	return string(r)
}

// waitLive waits for backend i's health to become want. The deadline is a
// hang guard, not a speed test (health has its own unit tests).
func (l *proxyLab) waitLive(t *testing.T, i int, want bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if l.p.Live()[i] == want {
			return
		}
	}
	t.Fatalf("backend %d never became live=%v", i, want)
}

// functionalScript is each command memcached has, good and bad, with K
// for the key: run once through the proxy and once against the key's
// backend alone, the replies must be the same.
var functionalScript = []string{
	"set K 0 0 5\r\nhello\r\n",
	"get K\r\n",
	"gets K\r\n",
	"add K 0 0 1\r\nx\r\n",
	"replace K 5 0 3\r\nabc\r\n",
	"append K 0 0 2\r\nde\r\n",
	"prepend K 0 0 2\r\nzz\r\n",
	"get K\r\n",
	"cas K 0 0 1 1\r\nq\r\n",
	"cas K-none 0 0 1 1\r\nq\r\n",
	"incr K 1\r\n",
	"set K 7 0 2\r\n10\r\n",
	"incr K 5\r\n",
	"decr K 3\r\n",
	"touch K 100\r\n",
	"get  K   K\r\n", // odd spacing, a key asked twice
	"gets K K-none K\r\n",
	"set K 0 0 x\r\n", // malformed: the proxy's own CLIENT_ERROR
	"incr K abc\r\n",  // malformed delta
	"set K 0 0 1 noreply\r\nA\r\n",
	"get K\r\n",
	"set K 0 0 1300\r\n" + strings.Repeat("b", 1300) + "\r\n",
	"get K\r\n",
	"delete K\r\n",
	"delete K\r\n",
	"get K\r\n",
	"bogus K\r\n",
	"GET K\r\n",
	"get " + strings.Repeat("k", 251) + "\r\n",
	"set K 0 0 1\r\nab\r\n", // bad data chunk
	// A malformed storage command with more behind it in the datagram:
	// memcached reads on after its error (its own trailing ERROR
	// included), and so must the proxy.
	"set K 0 0 1\r\nab\r\nget K\r\n",
	"set K 0 0 x\r\nget K\r\n",
	"get K\r\nset K 0 0 2\r\nabcd\r\nget K\r\n",
	"set K 0 0 3\r\nab\nget K\r\n",
	"set " + strings.Repeat("k", 251) + " 0 0 1\r\nx\r\nget K\r\n",
}

func TestProxyFunctional(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind.name, func(t *testing.T) { testProxyFunctional(t, kind) })
	}
}

func testProxyFunctional(t *testing.T, kind backendKind) {
	l := newProxyLab(t, kind)
	ring := l.p.Ring()
	directs := []*memcache.Client{l.direct(t, 0), l.direct(t, 1), l.direct(t, 2)}

	t.Run("commands", func(t *testing.T) {
		const viaKey, directKey = "fn-proxy", "fn-direct"
		owner := directs[ring.Lookup([]byte(directKey))]
		for _, raw := range functionalScript {
			got := do(t, l.client, strings.ReplaceAll(raw, "K", viaKey))
			want := do(t, owner, strings.ReplaceAll(raw, "K", directKey))
			want = strings.ReplaceAll(want, directKey, viaKey)
			got, want = string(memcache.NormalizeCAS([]byte(got))), string(memcache.NormalizeCAS([]byte(want)))
			if got != want {
				t.Errorf("%.40q: through the proxy %.200q, the backend alone %.200q", raw, got, want)
			}
		}
		// One datagram larger than the backend link's MTU (the client
		// would split it into several, which memcached drops): the slow
		// path forwards it whole.
		big := strings.Repeat("B", 3000)
		var conn *net.UDPConn
		if err := l.topo.Host("client").Do(func() (err error) {
			conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(l.listen))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		msg := memcache.AppendHeader(nil, memcache.Header{RequestID: 777, Total: 1})
		msg = fmt.Appendf(msg, "set big 0 0 %d\r\n%s\r\n", len(big), big)
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2048)
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != string(memcache.AppendHeader(nil, memcache.Header{RequestID: 777, Total: 1}))+"STORED\r\n" {
			t.Errorf("a 3000-byte set in one datagram: %q %v", buf[:n], err)
		}
		if r := do(t, l.client, "get big\r\n"); r != "VALUE big 0 3000\r\n"+big+"\r\nEND\r\n" {
			t.Errorf("get big: %.80q", r)
		}

		if v := do(t, l.client, "version\r\n"); v != string(VersionReply) {
			t.Errorf("version: %q", v)
		}

		// A backend's error reply comes back through XDP and counts
		// against that backend (incr's delta is not a number: XDP does
		// not read it, the backend refuses it).
		errorsOf := func() (n uint64) {
			st, err := l.p.Stats()
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range st.XDP.Backends {
				n += b.Errors
			}
			return n
		}
		before := errorsOf()
		if r := do(t, l.client, "incr "+viaKey+" x\r\n"); !memcache.IsErrorReply([]byte(r)) {
			t.Errorf("incr with a bad delta: %q, want an error line", r)
		}
		if n := errorsOf() - before; n != 1 {
			t.Errorf("%d error replies counted for one", n)
		}
	})

	// Keys on every backend, some missing, one asked twice: the reply
	// holds each present key's value in the order asked.
	t.Run("multiget", func(t *testing.T) {
		var keys []string
		var want strings.Builder
		per := make([]int, 3)
		for i := range 40 {
			k := fmt.Sprintf("mk-%d", i)
			keys = append(keys, k)
			per[ring.Lookup([]byte(k))]++
			if i%7 == 3 {
				continue // never stored
			}
			v := fmt.Sprintf("value-%d", i)
			if r := do(t, l.client, fmt.Sprintf("set %s %d 0 %d\r\n%s\r\n", k, i, len(v), v)); r != "STORED\r\n" {
				t.Fatalf("set %s: %q", k, r)
			}
			fmt.Fprintf(&want, "VALUE %s %d %d\r\n%s\r\n", k, i, len(v), v)
		}
		if per[0] == 0 || per[1] == 0 || per[2] == 0 {
			t.Fatalf("keys per backend %v: the test would not span them all", per)
		}
		keys = append(keys, "mk-0")
		fmt.Fprintf(&want, "VALUE mk-0 0 7\r\nvalue-0\r\n")
		before := l.p.Slow.Stats().Splits
		got := do(t, l.client, "get "+strings.Join(keys, " ")+"\r\n")
		if got != want.String()+"END\r\n" {
			t.Errorf("multi-get through the proxy:\n%q\nwant\n%q", got, want.String()+"END\r\n")
		}
		if after := l.p.Slow.Stats().Splits; after != before+1 {
			t.Errorf("slow-path splits %d -> %d, want one more", before, after)
		}
	})

	// Clients whose request ids collide, mixing XDP-routed single gets and
	// split multi-gets, each get only their own values.
	t.Run("concurrent", func(t *testing.T) {
		const clients, rounds = 4, 40
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := range clients {
			var mc *memcache.Client
			listen := l.listen
			if c%2 == 1 {
				listen = netip.AddrPortFrom(l.topo.Host("proxy").IfaceTo("client").IPv6.Addr(), DefaultPort)
			}
			if err := l.topo.Host("client").Do(func() (err error) { mc, err = memcache.DialUDP(listen.String()); return err }); err != nil {
				t.Fatal(err)
			}
			defer mc.Close()
			wg.Go(func() {
				errs <- func() error {
					ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
					defer cancel()
					var keys []string
					var want []byte
					for i := range 8 {
						k := fmt.Sprintf("cc-%d-%d", c, i)
						v := fmt.Sprintf("client %d value %d", c, i)
						if err := mc.Set(ctx, memcache.Item{Key: k, Value: []byte(v)}); err != nil {
							return fmt.Errorf("client %d: set %s: %w", c, k, err)
						}
						keys = append(keys, k)
						want = fmt.Appendf(want, "VALUE %s 0 %d\r\n%s\r\n", k, len(v), v)
					}
					want = append(want, "END\r\n"...)
					for r := range rounds {
						raw := "get " + strings.Join(keys, " ") + "\r\n"
						if r%2 == 1 {
							raw = "get " + keys[r%len(keys)] + "\r\n"
						}
						got, err := mc.Do(ctx, []byte(raw))
						if err != nil {
							return fmt.Errorf("client %d: %q: %w", c, raw, err)
						}
						if r%2 == 0 && !bytes.Equal(got, want) || r%2 == 1 && !bytes.Contains(want, bytes.TrimSuffix(got, []byte("END\r\n"))) {
							return fmt.Errorf("client %d: %q got %q", c, raw, got)
						}
					}
					return nil
				}()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})

	// kv2 killed: ejected, and every key still works through the proxy
	// (kv2's go to the survivors); restarted: re-admitted and used again.
	t.Run("eject", func(t *testing.T) {
		keys := make([]string, 60)
		for i := range keys {
			keys[i] = fmt.Sprintf("ej-%d", i)
		}
		roundTrip := func(round string) {
			t.Helper()
			for _, k := range keys {
				if r := do(t, l.client, fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", k, len(round), round)); r != "STORED\r\n" {
					t.Fatalf("%s: set %s: %q", round, k, r)
				}
				if r, want := do(t, l.client, "get "+k+"\r\n"), fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", k, len(round), round); r != want {
					t.Fatalf("%s: get %s: %q, want %q", round, k, r, want)
				}
			}
			// One multi-get over all the keys, through the slow path.
			r := do(t, l.client, "get "+strings.Join(keys, " ")+"\r\n")
			if n := strings.Count(r, "VALUE "); n != len(keys) {
				t.Fatalf("%s: multi-get brought %d of %d keys: %.200q", round, n, len(keys), r)
			}
		}
		onKV2 := func() int {
			n := 0
			for _, k := range keys {
				if l.p.Ring().Lookup([]byte(k)) == 1 {
					n++
				}
			}
			return n
		}
		if onKV2() == 0 {
			t.Fatal("no key on kv2: the test would prove nothing")
		}
		l.stops[1]()
		l.waitLive(t, 1, false)
		if n := onKV2(); n != 0 {
			t.Fatalf("%d keys still on the ejected kv2", n)
		}
		roundTrip("kv2-out")
		l.stops[1] = kind.start(t, l.backends[1])
		l.waitLive(t, 1, true)
		if onKV2() == 0 {
			t.Fatal("no key back on the re-admitted kv2")
		}
		roundTrip("kv2-back")
		// kv2 holds its keys' values, set through the proxy.
		kv2 := l.direct(t, 1)
		for _, k := range keys {
			if l.p.Ring().Lookup([]byte(k)) != 1 {
				continue
			}
			if r := do(t, kv2, "get "+k+"\r\n"); !strings.Contains(r, "kv2-back") {
				t.Errorf("kv2 alone: get %s: %q", k, r)
			}
		}
	})

	// With every backend gone the proxy answers as nutcracker does.
	t.Run("none-alive", func(t *testing.T) {
		for i, stop := range l.stops {
			stop()
			l.waitLive(t, i, false)
		}
		for _, raw := range []string{"get a\r\n", "get a b c d\r\n", "set a 0 0 1\r\nx\r\n"} {
			if r := do(t, l.client, raw); r != string(replyNoBackend) {
				t.Errorf("%q with no backend alive: %q, want %q", raw, r, replyNoBackend)
			}
		}
		st, err := l.p.Stats()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("stats: xdp %+v; slow %+v", st.XDP, st.Slow)
		if st.XDP.Forwarded == 0 || st.XDP.Replies == 0 || st.XDP.Slow == 0 || st.XDP.NoBackend == 0 || st.Slow.Splits == 0 {
			t.Errorf("counters did not count: %+v", st.XDP)
		}
	})
}
