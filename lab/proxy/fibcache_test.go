package proxy

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestFIBCache: a routed request's next hop comes from the cache until
// the FIB may have changed; FIBChanged, or WatchFIB on a routing event,
// makes the program ask the FIB again.
func TestFIBCache(t *testing.T) {
	l := newXDPLab(t)
	proxy := l.topo.Host("proxy")
	kv1 := l.topo.Host("kv1")
	toKV1 := proxy.IfaceTo("kv1")
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("fib%d", i); l.ring.Lookup([]byte(k)) == 0 {
			key = k
		}
	}
	frame := l.request(false, 40000, []byte("get "+key+"\r\n")).Frame()
	dstMAC := func() net.HardwareAddr {
		t.Helper()
		act, out := l.run(l.fromCli, frame)
		if act != xdpRedirect {
			t.Fatalf("action %d, want XDP_REDIRECT", act)
		}
		return net.HardwareAddr(out[:6])
	}
	setNeigh := func(mac net.HardwareAddr) {
		t.Helper()
		if err := proxy.Do(func() error {
			return netlink.NeighSet(&netlink.Neigh{LinkIndex: toKV1.Index, IP: kv1.IPv4().AsSlice(),
				HardwareAddr: mac, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := dstMAC(); !bytes.Equal(got, toKV1.Peer.MAC) {
		t.Fatalf("first request to %s, want kv1's %s", got, toKV1.Peer.MAC)
	}
	fake1 := net.HardwareAddr{0x02, 0, 0, 0, 0xfe, 1}
	setNeigh(fake1)
	if got := dstMAC(); !bytes.Equal(got, toKV1.Peer.MAC) {
		t.Errorf("with the hop cached and no change reported, to %s, want the cached %s", got, toKV1.Peer.MAC)
	}
	if err := l.o.FIBChanged(); err != nil {
		t.Fatal(err)
	}
	if got := dstMAC(); !bytes.Equal(got, fake1) {
		t.Errorf("after FIBChanged, to %s, want the new neighbour %s", got, fake1)
	}

	done := make(chan struct{})
	defer close(done)
	if err := proxy.Do(func() error { return l.o.WatchFIB(done, func(err error) { t.Error(err) }) }); err != nil {
		t.Fatal(err)
	}
	fake2 := net.HardwareAddr{0x02, 0, 0, 0, 0xfe, 2}
	setNeigh(fake2)
	deadline := time.Now().Add(5 * time.Second)
	for got := dstMAC(); !bytes.Equal(got, fake2); got = dstMAC() {
		if time.Now().After(deadline) {
			t.Fatalf("WatchFIB: 5 s after the neighbour changed, requests still go to %s, want %s", got, fake2)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
