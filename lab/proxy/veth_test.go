package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

// TestXDPProxyMemcached runs the real data path on veth pairs: clients
// talk memcached over UDP to the proxy's address, the program on the
// proxy's interfaces forwards each request to a real memcached on kv1..kv3
// and brings the replies back. Keys must end up where the ring says, and
// concurrent clients (whose request ids overlap) get only their own
// replies.
func TestXDPProxyMemcached(t *testing.T) {
	topo := netlab.ForTest(t, netlab.StarSpec(3, netlab.Options{PeerXDP: true}))
	proxy, client := topo.Host("proxy"), topo.Host("client")
	fromCli := proxy.IfaceTo("client")
	o, err := Load(Config{Listen4: fromCli.IPv4.Addr(), Listen6: fromCli.IPv6.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	var backends []Backend
	for _, kv := range topo.Backends() {
		mc, err := peer.StartMemcached(t.Context(), kv, peer.MemcachedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mc.Stop() })
		backends = append(backends, Backend{
			Server: Server{Host: kv.IPv4().String(), Port: 11211, Weight: 1},
			IPv4:   kv.IPv4(), IPv6: kv.IPv6(),
		})
	}
	ring, err := o.SetBackends(backends, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range proxy.Ifaces {
		l, err := netlab.AttachXDP(proxy, i.Name, o.Program())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const clients, keysEach = 4, 150
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var mu sync.Mutex
	stored := map[string]string{}
	for c := range clients {
		listen := netip.AddrPortFrom(fromCli.IPv4.Addr(), 11211)
		if c%2 == 1 {
			listen = netip.AddrPortFrom(fromCli.IPv6.Addr(), 11211)
		}
		var mc *memcache.Client
		if err := client.Do(func() (err error) { mc, err = memcache.DialUDP(listen.String()); return err }); err != nil {
			t.Fatal(err)
		}
		defer mc.Close()
		wg.Go(func() {
			errs <- func() error {
				for i := range keysEach {
					key := fmt.Sprintf("c%d-key-%d", c, i)
					val := fmt.Sprintf("value of %s via %s", key, listen.Addr())
					// A lost datagram is the one thing UDP allows; the
					// context bounds the wait, a retry recovers.
					var err error
					for try := 0; try < 3; try++ {
						tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
						err = mc.Set(tctx, memcache.Item{Key: key, Value: []byte(val)})
						tcancel()
						if err == nil {
							break
						}
					}
					if err != nil {
						return fmt.Errorf("client %d: set %s: %w", c, key, err)
					}
					items, err := mc.Get(ctx, key)
					if err != nil {
						return fmt.Errorf("client %d: get %s: %w", c, key, err)
					}
					if len(items) != 1 || items[0].Key != key || string(items[0].Value) != val {
						return fmt.Errorf("client %d: get %s through the proxy: %+v", c, key, items)
					}
					mu.Lock()
					stored[key] = val
					mu.Unlock()
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// Every key sits on the backend the ring names, and only there.
	wrong := 0
	for i, b := range backends {
		var mc *memcache.Client
		ap := netip.AddrPortFrom(b.IPv4, 11211)
		if err := proxy.Do(func() (err error) { mc, err = memcache.DialTCP(ap.String()); return err }); err != nil {
			t.Fatal(err)
		}
		defer mc.Close()
		for key := range stored {
			items, err := mc.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if has, want := len(items) == 1, ring.Lookup([]byte(key)) == i; has != want {
				wrong++
				if wrong <= 5 {
					t.Errorf("key %s on kv%d: %v, ring says %v", key, i+1, has, want)
				}
			}
		}
	}
	st, err := o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d keys through the XDP proxy from %d clients; stats %+v", len(stored), clients, st)
	if len(stored) != clients*keysEach || wrong > 0 {
		t.Errorf("%d keys stored, %d misplaced", len(stored), wrong)
	}
	if st.Forwarded < uint64(2*len(stored)) || st.Replies < uint64(2*len(stored)) || st.Slow != 0 {
		t.Errorf("stats %+v: want at least %d forwarded and replied, none slow", st, 2*len(stored))
	}
}

// TestXDPProxyEjects: Health drives the ring. A backend killed mid-run is
// taken out, and the same keys are then stored on the survivors where the
// new ring says; restarted, it is re-admitted and gets its keys again.
func TestXDPProxyEjects(t *testing.T) {
	topo := netlab.ForTest(t, netlab.StarSpec(3, netlab.Options{PeerXDP: true}))
	proxy, client := topo.Host("proxy"), topo.Host("client")
	fromCli := proxy.IfaceTo("client")
	o, err := Load(Config{Listen4: fromCli.IPv4.Addr(), Listen6: fromCli.IPv6.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	var backends []Backend
	mcs := make([]*peer.Process, 3)
	startMC := func(i int) {
		mc, err := peer.StartMemcached(t.Context(), topo.Backends()[i], peer.MemcachedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mc.Stop() })
		mcs[i] = mc
	}
	for i, kv := range topo.Backends() {
		startMC(i)
		backends = append(backends, Backend{Server: Server{Host: kv.IPv4().String(), Port: 11211, Weight: 1}, IPv4: kv.IPv4(), IPv6: kv.IPv6()})
	}
	var mu sync.Mutex
	ring, err := o.SetBackends(backends, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range proxy.Ifaces {
		l, err := netlab.AttachXDP(proxy, i.Name, o.Program())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
	var h *Health
	if err := proxy.Do(func() (err error) { h, err = NewHealth(backends, HealthConfig{}); return err }); err != nil {
		t.Fatal(err)
	}
	events := make(chan []bool, 16)
	hctx, hcancel := context.WithCancel(context.Background())
	hdone := make(chan error, 1)
	go func() {
		hdone <- h.Run(hctx, func(live []bool) {
			r, err := o.SetBackends(backends, live)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ring = r
			mu.Unlock()
			events <- live
		})
	}()
	t.Cleanup(func() {
		hcancel()
		if err := <-hdone; err != nil {
			t.Error(err)
		}
	})
	waitLive := func(i int, want bool) {
		t.Helper()
		deadline := time.After(30 * time.Second) // a hang guard, not a speed test
		for {
			select {
			case live := <-events:
				if live[i] == want {
					return
				}
			case <-deadline:
				t.Fatalf("backend %d never became live=%v (now %v)", i, want, h.Live())
			}
		}
	}

	var mc *memcache.Client
	listen := netip.AddrPortFrom(fromCli.IPv4.Addr(), 11211)
	if err := client.Do(func() (err error) { mc, err = memcache.DialUDP(listen.String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("eject-%d", i)
	}
	// storeAndCheck sets every key through the proxy with a value naming
	// the round, then checks each sits, with that value, on the backend
	// the current ring names.
	storeAndCheck := func(round string) []int {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		for _, k := range keys {
			var err error
			for try := 0; try < 3; try++ {
				tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
				err = mc.Set(tctx, memcache.Item{Key: k, Value: []byte(round)})
				tcancel()
				if err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("%s: set %s through the proxy: %v", round, k, err)
			}
		}
		mu.Lock()
		r := ring
		mu.Unlock()
		per := make([]int, len(backends))
		for _, k := range keys {
			b := r.Lookup([]byte(k))
			per[b]++
			var direct *memcache.Client
			ap := netip.AddrPortFrom(backends[b].IPv4, 11211)
			if err := proxy.Do(func() (err error) { direct, err = memcache.DialTCP(ap.String()); return err }); err != nil {
				t.Fatal(err)
			}
			items, err := direct.Get(ctx, k)
			direct.Close()
			if err != nil || len(items) != 1 || string(items[0].Value) != round {
				t.Fatalf("%s: key %s on kv%d: %+v %v", round, k, b+1, items, err)
			}
		}
		return per
	}

	per := storeAndCheck("all live")
	t.Logf("all live: keys per backend %v", per)
	if per[1] == 0 {
		t.Fatal("no key on kv2: the test would prove nothing")
	}
	if err := mcs[1].Stop(); err != nil {
		t.Fatal(err)
	}
	waitLive(1, false)
	per = storeAndCheck("kv2 out")
	t.Logf("kv2 killed and ejected: keys per backend %v", per)
	if per[1] != 0 {
		t.Errorf("%d keys routed to the ejected kv2", per[1])
	}
	startMC(1)
	waitLive(1, true)
	per = storeAndCheck("kv2 back")
	t.Logf("kv2 restarted and re-admitted: keys per backend %v", per)
	if per[1] == 0 {
		t.Error("no key routed to the re-admitted kv2")
	}
}
