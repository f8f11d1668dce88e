package kv

import (
	"context"
	"golang.org/x/sys/unix"

	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

// vethLab is the store on the kv end of a client—kv veth pair (XDP in
// native mode on kv's device, the slow path in kv's namespace), and, when
// asked for, real memcached in a namespace of its own ("mc", on a second
// link from the client) as the oracle.
type vethLab struct {
	client, kv, mc *netlab.Host
	o              *Objects
	srv            *Server
	mcd            *peer.Process
}

const labPort = 11211

// newVethLab builds the topology and starts everything; the test's cleanup
// removes it all, pass or fail. memcached gets one worker thread so that it
// handles datagrams in the order they arrive, as the store's single slow
// path goroutine does.
func newVethLab(t *testing.T, cfg Config, withMemcached bool) *vethLab {
	t.Helper()
	spec := netlab.Spec{
		// XDP_PASS on the client's ends: XDP_TX on a veth only delivers
		// when the peer has an XDP program.
		Hosts: []netlab.HostSpec{{Name: "client", Role: "client", XDPPass: true}, {Name: "kv", Role: "kv"}},
		Links: []netlab.LinkSpec{{A: "client", B: "kv"}},
	}
	if withMemcached {
		spec.Hosts = append(spec.Hosts, netlab.HostSpec{Name: "mc", Role: "kv"})
		spec.Links = append(spec.Links, netlab.LinkSpec{A: "client", B: "mc"})
	}
	topo := netlab.ForTest(t, spec)
	l := &vethLab{client: topo.Host("client"), kv: topo.Host("kv"), mc: topo.Host("mc")}

	cfg.Port = labPort
	if withMemcached && cfg.UDPReplyMax == 0 {
		// Compared with memcached, the store answers as it does: UDP
		// replies of any size (TestUDPAmplification tests the cap).
		cfg.UDPReplyMax = Unlimited
	}
	store := startStore(t, l.kv, cfg)
	l.o, l.srv = store.o, store.srv

	if withMemcached {
		var err error
		l.mcd, err = peer.StartMemcached(context.Background(), l.mc, peer.MemcachedOptions{Port: labPort, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.mcd.Stop() })
	}
	return l
}

// storeAddr and mcAddr are the servers' endpoints, v4 or v6.
func (l *vethLab) storeAddr(v6 bool) string { return hostAddr(l.kv, v6) }
func (l *vethLab) mcAddr(v6 bool) string    { return hostAddr(l.mc, v6) }

func hostAddr(h *netlab.Host, v6 bool) string {
	a := h.IPv4()
	if v6 {
		a = h.IPv6()
	}
	return netip.AddrPortFrom(a, labPort).String()
}

// dial opens a memcache client in the client's namespace.
func (l *vethLab) dial(t *testing.T, network, addr string) *memcache.Client {
	t.Helper()
	var c *memcache.Client
	err := l.client.Do(func() (err error) {
		if network == "udp" {
			c, err = memcache.DialUDP(addr)
		} else {
			c, err = memcache.DialTCP(addr)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialRaw opens a plain UDP socket in the client's namespace.
func (l *vethLab) dialRaw(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := l.client.Do(func() error {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return err
		}
		if c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap)); err != nil {
			return err
		}
		// Replies of many datagrams come in bursts (memcached answers
		// 150 gets in one datagram with 300), and a reader slowed by
		// emulation drains them late: SO_RCVBUFFORCE, since SO_RCVBUF
		// stops at net.core.rmem_max (208 KiB on a stock kernel, where
		// the burst overflowed and the sentinel's reply was dropped).
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stat reads one of the store's counters.
func (l *vethLab) stat(t *testing.T, name string) uint64 {
	t.Helper()
	st, err := l.srv.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range st {
		if kv[0] == name {
			v, err := strconv.ParseUint(kv[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no stat %q", name)
	return 0
}

// replyWait is how long a test waits for a reply before calling it lost:
// generous, since in a guest under emulation beside other guests a slow
// path reply took more than 10 s (a 1000-key get over TCP on 5.10, three
// guests on two cores). It bounds a failure; no test times a reply with it.
const replyWait = 30 * time.Second

func doCtx(c *memcache.Client, raw string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), replyWait)
	defer cancel()
	r, err := c.Do(ctx, []byte(raw))
	return string(r), err
}

// TestVethStore runs the store on a veth pair and talks to it as clients
// do: UDP over IPv4 and IPv6, answered in XDP when it can, and TCP through
// the slow path, on one set of items.
func TestVethStore(t *testing.T) {
	l := newVethLab(t, Config{MaxValue: 256}, false)
	tcp := l.dial(t, "tcp", l.storeAddr(false))
	big := strings.Repeat("B", 700)

	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "v4", true: "v6"}[v6], func(t *testing.T) {
			udp := l.dial(t, "udp", l.storeAddr(v6))
			key := fmt.Sprintf("veth-%v", v6)
			// Each step says whether XDP must answer it (xdp_tx grows by
			// one) or the slow path (xdp_pass grows by one).
			steps := []struct {
				c         *memcache.Client
				req, want string
				xdp       bool
			}{
				{udp, "get " + key + "\r\n", "END\r\n", true},
				{udp, "set " + key + " 7 0 5\r\nhello\r\n", "STORED\r\n", true},
				{udp, "get " + key + "\r\n", "VALUE " + key + " 7 5\r\nhello\r\nEND\r\n", true},
				{tcp, "set " + key + " 9 0 3\r\ntcp\r\n", "STORED\r\n", false},
				// A TCP set is seen by the next UDP get, in XDP.
				{udp, "get " + key + "\r\n", "VALUE " + key + " 9 3\r\ntcp\r\nEND\r\n", true},
				{udp, "incr " + key + " 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", false},
				{udp, "set n" + key + " 0 0 2\r\n10\r\n", "STORED\r\n", true},
				{tcp, "incr n" + key + " 5\r\n", "15\r\n", false},
				{udp, "decr n" + key + " 6\r\n", "9\r\n", true},
				{tcp, "get n" + key + "\r\n", "VALUE n" + key + " 0 2\r\n9 \r\nEND\r\n", false},
				// Too big for the kernel slot: the slow path holds it, and
				// XDP passes its gets up rather than serving a stale value.
				{udp, "set " + key + " 1 0 700\r\n" + big + "\r\n", "STORED\r\n", false},
				{udp, "get " + key + "\r\n", "VALUE " + key + " 1 700\r\n" + big + "\r\nEND\r\n", false},
				{tcp, "set " + key + " 2 0 1\r\nx\r\n", "STORED\r\n", false},
				{udp, "get " + key + "\r\n", "VALUE " + key + " 2 1\r\nx\r\nEND\r\n", true},
				{udp, "delete " + key + "\r\n", "DELETED\r\n", true},
				{tcp, "get " + key + "\r\n", "END\r\n", false},
			}
			for i, st := range steps {
				tx, pass := l.stat(t, "xdp_tx"), l.stat(t, "xdp_pass")
				got, err := doCtx(st.c, st.req)
				if err != nil {
					t.Fatalf("step %d %.60q: %v", i, st.req, err)
				}
				if got != st.want {
					t.Fatalf("step %d %.60q: got %.80q want %.80q", i, st.req, got, st.want)
				}
				if st.c == tcp {
					continue
				}
				dtx, dpass := l.stat(t, "xdp_tx")-tx, l.stat(t, "xdp_pass")-pass
				if st.xdp && (dtx != 1 || dpass != 0) || !st.xdp && (dtx != 0 || dpass != 1) {
					t.Errorf("step %d %.60q: xdp_tx +%d xdp_pass +%d, want it answered in %s",
						i, st.req, dtx, dpass, map[bool]string{true: "XDP", false: "the slow path"}[st.xdp])
				}
			}
			// noreply in XDP: dropped, yet stored.
			drop := l.stat(t, "xdp_drop")
			if _, err := doCtx(udp, "set q"+key+" 0 0 1 noreply\r\nq\r\n"); err != nil {
				t.Fatal(err)
			}
			if got, err := doCtx(udp, "get q"+key+"\r\n"); err != nil || got != "VALUE q"+key+" 0 1\r\nq\r\nEND\r\n" {
				t.Fatalf("get after set noreply: %q %v", got, err)
			}
			if d := l.stat(t, "xdp_drop") - drop; d != 1 {
				t.Errorf("xdp_drop +%d after a set noreply, want +1", d)
			}
			// stats and version go up to the slow path over UDP too.
			st, err := udp.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := strconv.Atoi(st["xdp_tx"]); n == 0 {
				t.Errorf("stats over UDP: xdp_tx %q", st["xdp_tx"])
			}
		})
	}
}

// TestVethIncrOnce checks incr and decr take effect once whatever the
// device's tailroom: on a veth an XDP reply can seldom grow much past its
// request, and a command XDP applied but could not answer must not be
// applied again by the slow path.
func TestVethIncrOnce(t *testing.T) {
	l := newVethLab(t, Config{MaxValue: 256}, false)
	udp := l.dial(t, "udp", l.storeAddr(false))
	for _, start := range []uint64{0, 9, 99999, 9223372036854775808, 18446744073709551605} {
		for _, delta := range []uint64{1, 10, 1 << 40} {
			key := fmt.Sprintf("n%d", start%1000)
			v := strconv.FormatUint(start, 10)
			if r, err := doCtx(udp, fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(v), v)); err != nil || r != "STORED\r\n" {
				t.Fatalf("set: %q %v", r, err)
			}
			want := strconv.FormatUint(start+delta, 10)
			got, err := doCtx(udp, fmt.Sprintf("incr %s %d\r\n", key, delta))
			if err != nil || got != want+"\r\n" {
				t.Fatalf("incr %d by %d: %q %v, want %s", start, delta, got, err, want)
			}
			if len(want) < len(v) {
				want += strings.Repeat(" ", len(v)-len(want))
			}
			if got := peek(t, udp, key); string(got) != want {
				t.Errorf("%d incremented by %d holds %q, want %q", start, delta, got, want)
			}
		}
	}
}
