package workshop

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/peer"
)

// Lesson 7's checks.
const (
	CheckProxyPass  = "frames that are no one-key get or set, or not for the proxy's address, pass"
	CheckProxyRoute = "a get or set goes to the backend its key's FNV-1a hash picks (hash % 2)"
	CheckProxyFrame = "the forwarded frame is well-formed: new destination, TTL one less, checksums right, the rest as sent"
	CheckProxyVeth  = "on client — proxy — 2 backends: each key is stored on its backend's memcached, and the client gets the answers"
)

// The star's proxy address (netlab's link 1, the proxy its first host),
// which clients send to; proxyVeth checks the topology agrees.
var proxyAddr = netip.MustParseAddr("198.18.1.1")

// nBackends is how many backends the checks give the proxy.
const nBackends = 2

func init() {
	checks := []Check{
		{Name: CheckProxyPass, Run: proxyPass},
		{Name: CheckProxyRoute, Run: proxyRoute,
			Hint: "key_hash() returns -1 until you write it (TODO 1), so every request passes; then TODO 2 rewrites the frame and returns bpf_redirect(b->ifindex, 0)"},
		{Name: CheckProxyFrame, Run: proxyFrame,
			Hint: "after changing ip->daddr and ip->ttl, ip_checksum(ip); set udp->check = 0, since the UDP checksum covers the addresses"},
		{Name: CheckProxyVeth, Run: proxyVeth},
	}
	register(&Lesson{N: 7, Slug: "proxy", Title: "route by key to backends", Program: "xdp_prog",
		Vars:   map[string]any{"nbackends": uint32(nBackends), "proxy_addr": proxyAddr.As4()},
		Checks: checks})
}

// backend is struct backend: the backend's address and MAC, and the
// proxy's interface towards it.
type backend struct {
	addr    netip.Addr
	ifindex int
	mac     net.HardwareAddr
	viaMAC  net.HardwareAddr
}

// setBackends fills the program's backends map.
func (e *Env) setBackends(bs []backend) error {
	m, err := e.Map("backends")
	if err != nil {
		return err
	}
	if m.ValueSize() != 20 {
		return fmt.Errorf("backends holds %d-byte values, want struct backend (20 bytes): keep the starter's", m.ValueSize())
	}
	for i, b := range bs {
		v := make([]byte, 20)
		a := b.addr.As4()
		copy(v[0:4], a[:])
		binary.NativeEndian.PutUint32(v[4:], uint32(b.ifindex))
		copy(v[8:14], b.mac)
		copy(v[14:20], b.viaMAC)
		if err := m.Put(uint32(i), v); err != nil {
			return err
		}
	}
	return nil
}

// testBackends are backends for BPF_PROG_TEST_RUN, where no frame leaves.
var testBackends = []backend{
	{addr: netip.MustParseAddr("198.18.2.2"), ifindex: 1, mac: net.HardwareAddr{2, 0, 0, 0, 2, 2}, viaMAC: net.HardwareAddr{2, 0, 0, 0, 2, 1}},
	{addr: netip.MustParseAddr("198.18.3.2"), ifindex: 1, mac: net.HardwareAddr{2, 0, 0, 0, 3, 2}, viaMAC: net.HardwareAddr{2, 0, 0, 0, 3, 1}},
}

// backendOf is the backend the key goes to: FNV-1a, modulo.
func backendOf(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % nBackends)
}

// toProxy is a request from Client to the proxy's address.
func toProxy(payload string) frame.Datagram {
	d := Request(0x77, payload)
	d.Dst = netip.AddrPortFrom(proxyAddr, memcache.DefaultPort)
	return d
}

func proxyPass(e *Env) error {
	if err := e.setBackends(testBackends); err != nil {
		return err
	}
	frames := otherFrames()
	for _, req := range []string{"delete foo\r\n", "gets foo\r\n", "get a b\r\n", "get\r\n", "incr n 1\r\n", "set\r\n"} {
		frames[fmt.Sprintf("%q", req)] = toProxy(req).Frame()
	}
	frames["a get to another address than the proxy's"] = Request(1, "get foo\r\n").Frame()
	return e.allPass(frames, "the proxy routes only one-key gets and sets sent to its address")
}

// routed runs req through the program and returns the frame it forwards.
func (e *Env) routed(req frame.Datagram) (frame.Datagram, error) {
	act, out, err := e.Run(req.Frame())
	if err != nil {
		return frame.Datagram{}, err
	}
	if act != XDPRedirect {
		return frame.Datagram{}, fmt.Errorf("%q came back %s, want XDP_REDIRECT (bpf_redirect's answer)", req.Payload, ActionName(act))
	}
	r, err := frame.Parse(out)
	if err != nil {
		return frame.Datagram{}, fmt.Errorf("the frame forwarded for %q is no well-formed frame: %v", req.Payload, err)
	}
	return r, nil
}

// proxyKeys are keys the checks route: both backends get some.
var proxyKeys = []string{"a", "b", "user:1", "user:2", "session:42", strings.Repeat("k", keyMax)}

func proxyRoute(e *Env) error {
	if err := e.setBackends(testBackends); err != nil {
		return err
	}
	for _, key := range proxyKeys {
		for _, req := range []string{"get " + key + "\r\n", "set " + key + " 0 0 1\r\nx\r\n"} {
			r, err := e.routed(toProxy(req))
			if err != nil {
				return err
			}
			want := testBackends[backendOf(key)]
			if r.Dst.Addr() != want.addr || !bytes.Equal(r.DstMAC, want.mac) {
				return fmt.Errorf("%q went to %s (MAC %s); key %q hashes to backend %d, %s (MAC %s)", short(req), r.Dst.Addr(), r.DstMAC, short(key), backendOf(key), want.addr, want.mac)
			}
		}
	}
	return nil
}

func proxyFrame(e *Env) error {
	if err := e.setBackends(testBackends); err != nil {
		return err
	}
	req := toProxy("get user:1\r\n")
	r, err := e.routed(req)
	if err != nil {
		return err
	}
	want := testBackends[backendOf("user:1")]
	if !bytes.Equal(r.SrcMAC, want.viaMAC) {
		return fmt.Errorf("the forwarded frame comes from MAC %s; it leaves by the proxy's interface towards the backend, %s", r.SrcMAC, want.viaMAC)
	}
	if r.Src != req.Src || r.Dst.Port() != req.Dst.Port() || r.ID != req.ID || string(r.Payload) != string(req.Payload) {
		return fmt.Errorf("the forwarded datagram is from %s to port %d, id %d, %q; the client's address, port, id and request must stay as sent (%s, %d, %d, %q)",
			r.Src, r.Dst.Port(), r.ID, r.Payload, req.Src, req.Dst.Port(), req.ID, req.Payload)
	}
	if r.TTL != 63 {
		return fmt.Errorf("the forwarded frame's TTL is %d; a router takes one off the request's 64", r.TTL)
	}
	return nil
}

// proxyVeth runs the proxy on netlab's star, client — proxy — kv1, kv2,
// with memcached on each backend: sets through the proxy must land on the
// backend their key picks, and the client gets the backends' answers.
func proxyVeth(e *Env) error {
	topo, err := e.topology(netlab.StarSpec(nBackends, netlab.Options{PeerXDP: true}), "proxy", "client")
	if err != nil {
		return err
	}
	client, proxy := topo.Host("client"), topo.Host("proxy")
	if got := proxy.IfaceTo("client").IPv4.Addr(); got != proxyAddr {
		return fmt.Errorf("checker: the star's proxy is at %s, not %s", got, proxyAddr)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	var bs []backend
	for _, kvh := range topo.Backends() {
		out := proxy.IfaceTo(kvh.Name)
		bs = append(bs, backend{addr: out.Peer.IPv4.Addr(), ifindex: out.Index, mac: out.Peer.MAC, viaMAC: out.MAC})
		mc, err := peer.StartMemcached(ctx, kvh, peer.MemcachedOptions{Threads: 1})
		if err != nil {
			return fmt.Errorf("starting memcached on %s: %w", kvh.Name, err)
		}
		defer mc.Stop()
	}
	if err := e.setBackends(bs); err != nil {
		return err
	}
	var c *net.UDPConn
	if err := client.Do(func() (err error) { c, err = net.ListenUDP("udp4", nil); return err }); err != nil {
		return err
	}
	defer c.Close()
	for i, key := range proxyKeys[:5] {
		want := bs[backendOf(key)].addr
		from, reply, err := exchangeFrom(c, netip.AddrPortFrom(proxyAddr, memcache.DefaultPort), uint16(i), "set "+key+" 0 0 1\r\nv\r\n")
		if err != nil {
			return fmt.Errorf("a set of %q through the proxy: %v", key, err)
		}
		if from.Addr() != want || reply != "STORED\r\n" {
			return fmt.Errorf("a set of %q through the proxy was answered %q by %s; its key picks %s", key, reply, from, want)
		}
		for j, b := range bs {
			_, got, err := exchangeFrom(c, netip.AddrPortFrom(b.addr, memcache.DefaultPort), uint16(100+i), "get "+key+"\r\n")
			if err != nil {
				return fmt.Errorf("asking backend %d (%s) for %q directly: %v", j, b.addr, key, err)
			}
			if has := got != "END\r\n"; has != (b.addr == want) {
				return fmt.Errorf("after a set of %q through the proxy, backend %s answers a get with %q; the key belongs on %s only", key, b.addr, got, want)
			}
		}
	}
	return nil
}

// exchangeFrom sends a one-datagram request from c to to and returns who
// answered and the reply's text, reassembled from memcached's datagrams.
func exchangeFrom(c *net.UDPConn, to netip.AddrPort, id uint16, req string) (netip.AddrPort, string, error) {
	msg := memcache.AppendHeader(nil, memcache.Header{RequestID: id, Total: 1})
	if _, err := c.WriteToUDPAddrPort(append(msg, req...), to); err != nil {
		return netip.AddrPort{}, "", err
	}
	var text strings.Builder
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, "", fmt.Errorf("no reply within 3s")
		}
		h, err := memcache.ParseHeader(buf[:n])
		if err != nil || h.RequestID != id {
			continue // not this request's
		}
		text.Write(buf[memcache.HeaderLen:n])
		s := text.String()
		if strings.HasSuffix(s, "END\r\n") || strings.HasSuffix(s, "STORED\r\n") || strings.HasSuffix(s, "ERROR\r\n") {
			return from, s, nil
		}
	}
}
