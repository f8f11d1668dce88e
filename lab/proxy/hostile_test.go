package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/netlab"
)

// keyOn is a key the ring places on backend b.
func (l *xdpLab) keyOn(b int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("k%d", i); l.ring.Lookup([]byte(k)) == b {
			return k
		}
	}
}

// replyFrom is backend b's reply to req as it reaches the proxy, and the
// proxy's interface towards b, which it arrives on.
func (l *xdpLab) replyFrom(b int, req frame.Datagram) (frame.Datagram, *netlab.Iface) {
	kv := l.topo.Host(fmt.Sprintf("kv%d", b+1))
	toKV := l.topo.Host("proxy").IfaceTo(kv.Name)
	a := kv.IPv4()
	if req.Src.Addr().Is6() {
		a = kv.IPv6()
	}
	return frame.Datagram{
		SrcMAC: toKV.Peer.MAC, DstMAC: toKV.MAC,
		Src: netip.AddrPortFrom(a, l.backends[b].Server.Port), Dst: req.Src,
		ID: req.ID, Total: 1, Payload: []byte("END\r\n"),
	}, toKV
}

// flow has the client ask backend b for a key from port, so that b's
// replies to it are the proxy's to bring back, and returns the request
// and b's reply to it.
func (l *xdpLab) flow(v6 bool, port uint16, b int) (frame.Datagram, frame.Datagram, *netlab.Iface) {
	l.t.Helper()
	req := l.request(v6, port, []byte("get "+l.keyOn(b)+"\r\n"))
	if l.checkRequest(req) != b {
		l.t.Fatalf("request not routed to backend %d", b)
	}
	reply, toKV := l.replyFrom(b, req)
	return req, reply, toKV
}

// passes fails t unless frame, arriving on dev, passes untouched.
func (l *xdpLab) passes(t *testing.T, what string, dev *netlab.Iface, in []byte) {
	t.Helper()
	if act, out := l.run(dev, in); act != xdpPass || !bytes.Equal(in, out) {
		t.Errorf("%s: action %d (frame changed: %v), want XDP_PASS untouched", what, act, !bytes.Equal(in, out))
	}
}

// TestXDPFrameChecks: a frame the kernel would not take as this host's
// (a group MAC address, a bad IP version or IPv4 header checksum, lengths
// that do not fit) is neither forwarded nor turned into a reply: it
// passes untouched, requests and replies alike.
func TestXDPFrameChecks(t *testing.T) {
	l := newXDPLab(t)
	for _, isV6 := range []bool{false, true} {
		muts := frame.Malformed(isV6)
		req, reply, toKV := l.flow(isV6, 42000, 1)
		if act, _ := l.run(toKV, reply.Frame()); act != xdpRedirect {
			t.Fatalf("v6 %v: the baseline reply: action %d", isV6, act)
		}
		for _, m := range muts {
			for _, c := range []struct {
				kind string
				d    frame.Datagram
				dev  *netlab.Iface
			}{{"request", req, l.fromCli}, {"reply", reply, toKV}} {
				in := c.d.Frame()
				m.Apply(in)
				l.passes(t, fmt.Sprintf("v6 %v: %s with %s", isV6, c.kind, m.Name), c.dev, in)
			}
		}
	}
}

// TestXDPReplyIngress: a datagram with a backend's source to one of its
// clients is a reply only if it comes in on the interface the proxy
// reaches that backend through: the same datagram injected from the
// client's side, or from another backend's link, is not sent to the
// client as the proxy's.
func TestXDPReplyIngress(t *testing.T) {
	l := newXDPLab(t)
	toKV3 := l.topo.Host("proxy").IfaceTo("kv3")
	for _, v6 := range []bool{false, true} {
		_, reply, toKV2 := l.flow(v6, 43000, 1)
		in := reply.Frame()
		for _, dev := range []*netlab.Iface{l.fromCli, toKV3} {
			l.passes(t, fmt.Sprintf("v6 %v: kv2's reply arriving on %s", v6, dev.Name), dev, in)
		}
		if act, _ := l.run(toKV2, in); act != xdpRedirect {
			t.Errorf("v6 %v: kv2's reply on its own link: action %d, want XDP_REDIRECT", v6, act)
		}
	}
	if st, _ := l.o.Stats(); st.SpoofedReply != 4 || st.Replies != 2 {
		t.Errorf("stats %+v: want 4 spoofed replies passed, 2 replies", st)
	}
}

// TestXDPBackendSource: a request from a backend's own address and
// serving port, whatever that port is, is dropped and counted: forwarded,
// it would have a backend answer a backend. The same host from another
// port is an ordinary client.
func TestXDPBackendSource(t *testing.T) {
	l := newXDPLab(t)
	l.backends[0].Server.Port = 12345
	l.setBackends(nil)
	toKV1 := l.topo.Host("proxy").IfaceTo("kv1")
	for _, v6 := range []bool{false, true} {
		for _, c := range []struct {
			port    uint16
			refused bool
		}{{12345, true}, {12346, false}} {
			d := l.request(v6, c.port, []byte("get "+l.keyOn(1)+"\r\n"))
			kv1 := l.backends[0].IPv4
			if v6 {
				kv1 = l.backends[0].IPv6
			}
			d.Src = netip.AddrPortFrom(kv1, c.port)
			d.SrcMAC, d.DstMAC = toKV1.Peer.MAC, toKV1.MAC
			before, _ := l.o.Stats()
			act, _ := l.run(toKV1, d.Frame())
			after, _ := l.o.Stats()
			dropped := after.ReflectDrop - before.ReflectDrop
			if c.refused && (act != xdpDrop || dropped != 1) {
				t.Errorf("v6 %v: from kv1's %s: action %d, reflect drops +%d; want XDP_DROP counted", v6, d.Src, act, dropped)
			}
			if !c.refused && (act != xdpRedirect || dropped != 0) {
				t.Errorf("v6 %v: from %s: action %d, reflect drops +%d; want it forwarded", v6, d.Src, act, dropped)
			}
		}
	}
}

// TestXDPFlowFlood: requests from many spoofed sources cannot plant flows
// faster than the budget of new flows lets them, so they cannot push an
// established client's flow out of the map; its replies keep coming
// back through XDP.
func TestXDPFlowFlood(t *testing.T) {
	l := newXDPLab(t)
	_, reply, toKV2 := l.flow(false, 44000, 1)
	if act, _ := l.run(toKV2, reply.Frame()); act != xdpRedirect {
		t.Fatalf("the client's reply before the flood: action %d", act)
	}
	// Three times the map's size, each answered by the backend as a real
	// one would be (which marks the flow used, as the client's was).
	const n = 3 * 65536
	sreq := l.request(false, 45000, []byte("get "+l.keyOn(1)+"\r\n"))
	sreq.NoUDPChecksum = true
	sreply, _ := l.replyFrom(1, sreq)
	sreply.NoUDPChecksum = true
	req, rep := sreq.Frame(), sreply.Frame()
	out := make([]byte, len(req)+256)
	run := func(dev *netlab.Iface, f []byte) (uint32, error) {
		opts := ebpf.RunOptions{Data: f, DataOut: out,
			Context: xdpMD{DataEnd: uint32(len(f)), IngressIfindex: uint32(dev.Index)}}
		return l.o.Program().Run(&opts)
	}
	planted := 0
	start := time.Now()
	err := l.topo.Host("proxy").Do(func() error {
		for i := range n {
			// From 100.64.0.0/10: the request's IPv4 source, the reply's destination.
			src := 0x64400000 + uint32(i)
			binary.BigEndian.PutUint32(req[frame.EthLen+12:], src)
			binary.BigEndian.PutUint32(rep[frame.EthLen+16:], src)
			frame.FixIPv4Sum(req)
			frame.FixIPv4Sum(rep)
			act, err := run(l.fromCli, req)
			if err != nil {
				return err
			}
			if act != xdpRedirect {
				continue
			}
			planted++
			if _, err := run(toKV2, rep); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	flows := 0
	var k, next proxyProxyFlow
	for err := l.o.objs.Flows.NextKey(nil, &next); err == nil; err = l.o.objs.Flows.NextKey(&k, &next) {
		flows, k = flows+1, next
	}
	t.Logf("%d spoofed sources in %v: %d forwarded, %d flows in the map", n, took, planted, flows)
	if act, _ := l.run(toKV2, reply.Frame()); act != xdpRedirect {
		t.Errorf("the client's reply after the flood: action %d, want XDP_REDIRECT (its flow was evicted)", act)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	if bound := DefaultNewFlows * cpus * (int(took/time.Second) + 2); planted > bound {
		t.Errorf("a flood planted %d flows, want at most %d (%d a second on each of %d CPUs)", planted, bound, DefaultNewFlows, cpus)
	}
	// The rest went to the slow path, counted.
	if st, _ := l.o.Stats(); st.FlowLimit != uint64(n-planted) {
		t.Errorf("FlowLimit %d, want the %d requests not forwarded", st.FlowLimit, n-planted)
	}
}
