package proxy

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

// placementKeys is how many distinct keys each case stores through
// nutcracker.
const placementKeys = 10000

// placementServer is one backend of a case: a memcached on kv<host+1>.
type placementServer struct {
	host   int // 0..2: kv1..kv3
	port   uint16
	weight uint32
	name   string
	ipv6   bool
}

// TestRingMatchesNutcracker stores keys through a real nutcracker (ketama,
// fnv1a_32) in front of real memcacheds, then asks each memcached which
// keys it holds: every key must sit where Ring.Lookup puts it. The cases
// cover each form of server identity nutcracker hashes (the host alone on
// port 11211, host:port, IPv6 text, a name), weights whose point counts
// depend on float32 rounding, and ring rebuilds after an ejection.
func TestRingMatchesNutcracker(t *testing.T) {
	topo := netlab.ForTest(t, netlab.StarSpec(3, netlab.Options{}))
	long := strings.Repeat("n", maxIdentity) // longest name we accept
	cases := []struct {
		name    string
		servers []placementServer
		eject   int // index of a server to kill before storing; -1: none
	}{
		{"port11211", []placementServer{{0, 11211, 1, "", false}, {1, 11211, 1, "", false}, {2, 11211, 1, "", false}}, -1},
		// Five servers with total weight 25: nutcracker gives 28, 60, 124,
		// 252 and 320 points where exact arithmetic gives 32, 64, ...
		{"weighted-ipv6", []placementServer{
			{0, 11312, 1, "", true}, {1, 11312, 2, "", true}, {2, 11312, 4, "", true},
			{0, 11313, 8, "", true}, {1, 11313, 10, "", true},
		}, -1},
		{"named", []placementServer{{0, 11411, 1, "alpha", false}, {1, 11411, 2, long, false}, {2, 11411, 3, "gamma", false}}, -1},
		// Killing the weight-8 server leaves weights 1, 2, 4, 10, so every
		// live server's point count changes too.
		{"ejected", []placementServer{
			{0, 11512, 1, "", false}, {1, 11512, 2, "", false}, {2, 11512, 4, "", false},
			{0, 11513, 8, "", false}, {1, 11513, 10, "", false},
		}, 3},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkPlacement(t, topo, c.servers, c.eject, uint16(22121+i), 22300+i, uint64(i))
		})
	}
}

func checkPlacement(t *testing.T, topo *netlab.Topology, specs []placementServer, eject int, listenPort uint16, statsPort int, seed uint64) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	client, proxyHost, kvs := topo.Host("client"), topo.Host("proxy"), topo.Backends()

	servers := make([]Server, len(specs))
	mcs := make([]*peer.Process, len(specs))
	var backends []string
	for i, s := range specs {
		h := kvs[s.host]
		addr := h.IPv4()
		if s.ipv6 {
			addr = h.IPv6()
		}
		servers[i] = Server{Host: addr.String(), Port: s.port, Weight: s.weight, Name: s.name}
		backends = append(backends, servers[i].String())
		mc, err := peer.StartMemcached(ctx, h, peer.MemcachedOptions{Addrs: []netip.Addr{addr}, Port: int(s.port), UDPPort: -1})
		if err != nil {
			t.Fatal(err)
		}
		mcs[i] = mc
		t.Cleanup(func() { mc.Stop() })
	}
	listen := netip.AddrPortFrom(proxyHost.IfaceTo("client").IPv4.Addr(), listenPort)
	nc, err := peer.StartNutcracker(ctx, proxyHost, listen, backends, peer.NutcrackerOptions{
		AutoEjectHosts:     eject >= 0,
		ServerFailureLimit: 1,
		// Long enough that an ejected server stays out for the whole case.
		ServerRetryTimeout: 10 * time.Minute,
		StatsPort:          statsPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Stop() })

	dial := func(h *netlab.Host, ap netip.AddrPort) *memcache.Client {
		t.Helper()
		var c *memcache.Client
		if err := h.Do(func() (err error) { c, err = memcache.DialTCP(ap.String()); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	ring, err := NewRing(servers, nil)
	if err != nil {
		t.Fatal(err)
	}
	if eject >= 0 {
		ring = ejectThroughNutcracker(ctx, t, servers, eject, mcs[eject], dial(client, listen))
	}

	keys := placementKeySet(seed, placementKeys)
	storeAll(ctx, t, client, listen, keys)

	// Ask every backend which of the keys it holds.
	where := make(map[string][]int, len(keys))
	for i, s := range servers {
		if i == eject {
			continue
		}
		ap, _ := s.AddrPort()
		mc := dial(proxyHost, ap)
		for b := 0; b < len(keys); b += 100 {
			items, err := mc.Get(ctx, keys[b:min(b+100, len(keys))]...)
			if err != nil {
				t.Fatalf("get from %s: %v", s, err)
			}
			for _, it := range items {
				where[it.Key] = append(where[it.Key], i)
			}
		}
	}
	match, shown := 0, 0
	for _, k := range keys {
		want := ring.Lookup([]byte(k))
		got := where[k]
		if len(got) == 1 && got[0] == want {
			match++
			continue
		}
		if shown++; shown <= 10 {
			t.Errorf("key %.40q (hash %#x): on servers %v, ring says %d", k, Hash([]byte(k)), got, want)
		}
	}
	if match != len(keys) {
		t.Errorf("%d of %d keys where the ring puts them", match, len(keys))
	}
	per := make([]int, len(servers))
	for _, k := range keys {
		if s := ring.Lookup([]byte(k)); s >= 0 {
			per[s]++
		}
	}
	t.Logf("%d/%d keys placed as nutcracker placed them; keys per server %v", match, len(keys), per)
}

// ejectThroughNutcracker kills servers[dead]'s memcached and sends a key the
// full ring maps to it until nutcracker, having counted the failure, stores
// it elsewhere. It returns the ring over the survivors, checking that the
// probe key landed where that ring says.
func ejectThroughNutcracker(ctx context.Context, t *testing.T, servers []Server, dead int, mc *peer.Process, nc *memcache.Client) *Ring {
	t.Helper()
	full, err := NewRing(servers, nil)
	if err != nil {
		t.Fatal(err)
	}
	live := make([]bool, len(servers))
	for i := range live {
		live[i] = i != dead
	}
	less, err := NewRing(servers, live)
	if err != nil {
		t.Fatal(err)
	}
	probe := ""
	for i := 0; probe == ""; i++ {
		if k := fmt.Sprintf("probe-%d", i); full.Lookup([]byte(k)) == dead {
			probe = k
		}
	}
	mc.Stop()
	// With server_failure_limit 1 the first refused connection ejects the
	// server; the bound only stops a broken nutcracker from hanging us.
	var reply []byte
	for attempt := 0; ; attempt++ {
		reply, err = nc.Do(ctx, []byte("set "+probe+" 0 0 1\r\nx\r\n"))
		if err != nil {
			t.Fatalf("set through nutcracker: %v", err)
		}
		if string(reply) == "STORED\r\n" {
			break
		}
		if attempt == 50 {
			t.Fatalf("nutcracker still fails sets for %s's keys after %d tries: %q", servers[dead], attempt, reply)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ejected %s; probe %q went to %s", servers[dead], probe, servers[less.Lookup([]byte(probe))])
	return less
}

// storeAll sets every key through nutcracker, pipelined in batches over a
// few connections.
func storeAll(ctx context.Context, t *testing.T, client *netlab.Host, listen netip.AddrPort, keys []string) {
	t.Helper()
	const conns, batch = 4, 250
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		var mc *memcache.Client
		if err := client.Do(func() (err error) { mc, err = memcache.DialTCP(listen.String()); return err }); err != nil {
			t.Fatal(err)
		}
		defer mc.Close()
		// Connection c sends batches c, c+conns, c+2*conns, ...
		wg.Go(func() {
			for b := c * batch; b < len(keys); b += conns * batch {
				var raw []byte
				n := 0
				for _, k := range keys[b:min(b+batch, len(keys))] {
					raw = fmt.Appendf(raw, "set %s 0 0 1\r\nv\r\n", k)
					n++
				}
				reply, err := mc.Do(ctx, raw)
				if err == nil && !bytes.Equal(reply, bytes.Repeat([]byte("STORED\r\n"), n)) {
					err = fmt.Errorf("sets %d..%d through nutcracker: replies %.200q", b, b+n, reply)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// placementKeySet returns n distinct valid memcached keys: mostly short,
// some up to the 250-byte limit, with bytes from 0x80 up (which nutcracker
// hashes sign-extended) in about a quarter of them.
func placementKeySet(seed uint64, n int) []string {
	r := rand.New(rand.NewPCG(seed, 0x6b6574616d61))
	seen := make(map[string]bool, n)
	keys := make([]string, 0, n)
	for len(keys) < n {
		l := 1 + r.IntN(40)
		if r.IntN(10) == 0 {
			l = 1 + r.IntN(memcache.MaxKeyLen)
		}
		high := r.IntN(4) == 0
		b := make([]byte, l)
		for i := range b {
			switch {
			case high && r.IntN(3) == 0:
				b[i] = byte(0x80 + r.IntN(0x80))
			default:
				b[i] = byte(0x21 + r.IntN(0x7f-0x21)) // printable, no space or DEL
			}
		}
		if k := string(b); !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}
