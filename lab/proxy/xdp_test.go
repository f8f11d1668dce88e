package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/internal/testutils"
	"github.com/xdplab/xdplab/lab/netlab"
)

// XDP's actions as Run returns them (enum xdp_action, from the program's BTF).
const (
	xdpDrop     = uint32(proxyXdpActionXDP_DROP)
	xdpPass     = uint32(proxyXdpActionXDP_PASS)
	xdpTX       = uint32(proxyXdpActionXDP_TX)
	xdpRedirect = uint32(proxyXdpActionXDP_REDIRECT)
)

// xdpMD is struct xdp_md, the context BPF_PROG_TEST_RUN takes: it sets
// the ingress device, which the program's FIB lookups start from.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// xdpLab is a star topology with the proxy program loaded for the proxy
// host's addresses towards the client, and kv1..kv3 as backends.
type xdpLab struct {
	t        testing.TB
	topo     *netlab.Topology
	o        *Objects
	backends []Backend
	ring     *Ring
	client   *netlab.Iface // the client's end of its link to the proxy
	fromCli  *netlab.Iface // the proxy's end of that link
	tooBig   int           // routable requests checkRequest expected the FIB to refuse
}

// Options, if any, change the program's configuration.
func newXDPLab(t testing.TB, options ...func(*Config)) *xdpLab {
	topo := netlab.ForTest(t, netlab.StarSpec(3, netlab.Options{}))
	proxy := topo.Host("proxy")
	l := &xdpLab{t: t, topo: topo, fromCli: proxy.IfaceTo("client")}
	l.client = l.fromCli.Peer
	cfg := Config{Listen4: l.fromCli.IPv4.Addr(), Listen6: l.fromCli.IPv6.Addr()}
	for _, o := range options {
		o(&cfg)
	}
	o, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	l.o = o
	for _, kv := range topo.Backends() {
		l.backends = append(l.backends, Backend{
			Server: Server{Host: kv.IPv4().String(), Port: 11211, Weight: 1},
			IPv4:   kv.IPv4(), IPv6: kv.IPv6(),
		})
	}
	l.setBackends(nil)
	return l
}

func (l *xdpLab) setBackends(live []bool) {
	l.t.Helper()
	r, err := l.o.SetBackends(l.backends, live)
	if err != nil {
		l.t.Fatal(err)
	}
	l.ring = r
}

// run runs frame through the program as if it arrived on dev (an
// interface of the proxy host), in the proxy's namespace so that the FIB
// is the proxy's, and returns the action and the frame after it.
func (l *xdpLab) run(dev *netlab.Iface, frame []byte) (uint32, []byte) {
	l.t.Helper()
	out := make([]byte, len(frame)+256)
	opts := ebpf.RunOptions{
		Data: frame, DataOut: out,
		Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(dev.Index)},
	}
	var ret uint32
	err := l.topo.Host("proxy").Do(func() (err error) {
		ret, err = l.o.Program().Run(&opts)
		return err
	})
	if errors.Is(err, unix.EINVAL) {
		// Kernels before 5.15 take no xdp_md context in test runs, and
		// without the ingress device the FIB lookups mean nothing.
		testutils.Missing(l.t, "BPF_PROG_TEST_RUN with an xdp_md context", "5.15", err)
	}
	if err != nil {
		l.t.Fatal(err)
	}
	return ret, opts.DataOut
}

// request is a client's datagram to the proxy.
func (l *xdpLab) request(v6 bool, port uint16, payload []byte) frame.Datagram {
	src, dst := l.client.IPv4.Addr(), l.fromCli.IPv4.Addr()
	if v6 {
		src, dst = l.client.IPv6.Addr(), l.fromCli.IPv6.Addr()
	}
	return frame.Datagram{
		SrcMAC: l.client.MAC, DstMAC: l.fromCli.MAC,
		Src: netip.AddrPortFrom(src, port), Dst: netip.AddrPortFrom(dst, 11211),
		ID: port ^ 0x5a5a, Total: 1, Payload: payload,
	}
}

// checkRequest runs one request and holds the program to Route: routed
// requests leave rewritten for the backend Route names, the rest pass
// unchanged. It returns Route's answer.
func (l *xdpLab) checkRequest(d frame.Datagram) int {
	l.t.Helper()
	in := d.Frame()
	want := Route(l.ring, d.Payload)
	// Beyond the route decision, the FIB must let the datagram out: one
	// larger than the backend link's MTU (1500 on veth) passes, for the
	// slow path to send in fragments.
	if want >= 0 && len(in)-frame.EthLen > 1500 {
		want = -1
		l.tooBig++
	}
	act, out := l.run(l.fromCli, in)
	if want < 0 {
		if act != xdpPass || !bytes.Equal(out, in) {
			l.t.Fatalf("%s %.80q: action %d (frame changed: %v), want XDP_PASS untouched", d.Src.Addr(), d.Payload, act, !bytes.Equal(out, in))
		}
		return want
	}
	if act != xdpRedirect {
		l.t.Fatalf("%s %.80q: action %d, want XDP_REDIRECT to backend %d", d.Src.Addr(), d.Payload, act, want)
	}
	got, err := frame.Parse(out)
	if err != nil {
		l.t.Fatalf("%.80q: forwarded frame: %v", d.Payload, err)
	}
	b := l.backends[want]
	dst := b.IPv4
	if d.Src.Addr().Is6() {
		dst = b.IPv6
	}
	kv := l.topo.Host(fmt.Sprintf("kv%d", want+1))
	toKV := l.topo.Host("proxy").IfaceTo(kv.Name)
	exp := d
	exp.Dst = netip.AddrPortFrom(dst, b.Server.Port)
	exp.SrcMAC, exp.DstMAC = toKV.MAC, toKV.Peer.MAC
	exp.TTL = 63
	if fmt.Sprint(got) != fmt.Sprint(exp) {
		l.t.Fatalf("%.80q: forwarded\n  %+v\nwant\n  %+v", d.Payload, got, exp)
	}
	return want
}

// payloads returns requests of every shape Route distinguishes: routed
// ones, ones it leaves to the slow path, and mutations of both.
func payloads(r *rand.Rand, n int) [][]byte {
	keys := placementKeySet(7, 200)
	key := func() string {
		if r.IntN(20) == 0 {
			return strings.Repeat(string(rune('a'+r.IntN(26))), 249+r.IntN(3)) // around the 250-byte limit
		}
		return keys[r.IntN(len(keys))]
	}
	sep := func() string {
		if r.IntN(30) == 0 {
			return strings.Repeat(" ", 30+r.IntN(4)) // around the 32-space limit
		}
		return " "
	}
	eol := func() string { return []string{"\r\n", "\r\n", "\r\n", "\n", "\r", ""}[r.IntN(6)] }
	var out [][]byte
	for len(out) < n {
		var p string
		switch r.IntN(6) {
		case 0, 1:
			cmd := []string{"get", "gets"}[r.IntN(2)]
			nk := 1 + r.IntN(3)
			if r.IntN(8) == 0 {
				nk = 20 + r.IntN(8) // around KeysMax
			}
			p = cmd
			for range nk {
				p += sep() + key()
			}
			p += eol()
		case 2:
			cmd := []string{"set", "add", "replace", "append", "prepend", "cas"}[r.IntN(6)]
			v := strings.Repeat("v", r.IntN(40))
			if r.IntN(10) == 0 {
				v = strings.Repeat("w", 1300+r.IntN(200)) // around the payload limit
			}
			nb := len(v)
			if r.IntN(8) == 0 {
				nb += r.IntN(3) - 1
			}
			head, tail := fmt.Sprintf("%s%s%s ", cmd, sep(), key()), fmt.Sprintf(" %d", nb)
			if cmd == "cas" {
				tail += " 12"
			}
			if r.IntN(4) == 0 {
				tail += " noreply"
			}
			tail += eol()
			flags, exptime := "0", "0"
			if r.IntN(6) == 0 {
				// Long flags and exptime tokens (XDP reads neither) put
				// the line's end around LineCopy, the most XDP copies of
				// a storage request.
				if n := LineCopy - 4 + r.IntN(8) - len(head) - len(tail) - 1; n >= 2 && n <= 2*KeyMax {
					flags, exptime = strings.Repeat("1", n/2), strings.Repeat("2", n-n/2)
				}
			}
			p = head + flags + " " + exptime + tail + v + "\r\n"
		case 3:
			cmd := []string{"delete", "incr", "decr", "touch"}[r.IntN(4)]
			p = cmd + sep() + key()
			if cmd != "delete" {
				p += " 5"
			}
			p += eol()
		case 4:
			p = []string{"stats\r\n", "version\r\n", "flush_all\r\n", "get\r\n", " get a\r\n", "GET a\r\n",
				"get a\r\nget b\r\n", "get a\tb\r\n", "\r\n", "", "verbosity 1\r\n", "delete a\r\nx",
				"set a 0 0 1234567\r\n", "set a 0 0 -1\r\nx\r\n", "get a\x00b\r\n", "gat 0 a\r\n"}[r.IntN(16)]
		case 5:
			b := make([]byte, r.IntN(64))
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			p = string(b)
		}
		b := []byte(p)
		// Mutate a third of them: flip, drop or insert bytes, or truncate.
		if r.IntN(3) == 0 && len(b) > 0 {
			for range 1 + r.IntN(3) {
				i := r.IntN(len(b))
				switch r.IntN(4) {
				case 0:
					b[i] = byte(r.IntN(256))
				case 1:
					b[i] = " \r\n0"[r.IntN(4)]
				case 2:
					b = append(b[:i], b[i+1:]...)
				case 3:
					b = b[:i]
				}
				if len(b) == 0 {
					break
				}
			}
		}
		out = append(out, b)
	}
	return out
}

// TestXDPRouteMatchesRing: every request goes where Route (the Go ring)
// says, rewritten correctly, or passes untouched; IPv4 and IPv6.
func TestXDPRouteMatchesRing(t *testing.T) {
	// Its thousands of client ports each plant a flow: lift the bound on
	// new flows (TestXDPFlowFlood's).
	l := newXDPLab(t, func(c *Config) { c.NewFlows = 1 << 30 })
	r := rand.New(rand.NewPCG(1, 2))
	routed, passed := 0, 0
	per := make([]int, len(l.backends))
	for i, p := range payloads(r, 6000) {
		d := l.request(i%2 == 1, uint16(20000+i%1000), p)
		if b := l.checkRequest(d); b >= 0 {
			routed++
			per[b]++
		} else {
			passed++
		}
	}
	t.Logf("%d routed (per backend %v), %d passed to the slow path", routed, per, passed)
	if routed < 1000 || passed < 1500 || min(per[0], per[1], per[2]) == 0 {
		t.Errorf("the generator's mix is off: %d routed %v, %d passed", routed, per, passed)
	}
	st, err := l.o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests != uint64(routed+passed) || st.Forwarded != uint64(routed) || st.Slow != uint64(passed) ||
		st.NoRoute != uint64(l.tooBig) || l.tooBig == 0 {
		t.Errorf("stats %+v, want %d requests, %d forwarded, %d slow, %d of them too big for the link", st, routed+passed, routed, passed, l.tooBig)
	}
	for i, b := range st.Backends {
		if b.Requests != uint64(per[i]) {
			t.Errorf("backend %d counted %d requests, routed %d", i, b.Requests, per[i])
		}
	}
}

// TestXDPRouteKeys: single-key requests for many keys, against the ring as
// backends go out and come back; with nothing live everything passes.
func TestXDPRouteKeys(t *testing.T) {
	l := newXDPLab(t)
	keys := placementKeySet(3, 2000)
	for _, live := range [][]bool{nil, {true, false, true}, {false, false, true}, nil, {false, false, false}} {
		l.setBackends(live)
		seen := map[int]int{}
		for i, k := range keys {
			d := l.request(i%2 == 0, 30000, []byte("get "+k+"\r\n"))
			b := l.checkRequest(d)
			if b != l.ring.Lookup([]byte(k)) {
				t.Fatalf("live %v: key %q routed to %d, ring says %d", live, k, b, l.ring.Lookup([]byte(k)))
			}
			seen[b]++
		}
		for i, ok := range live {
			if !ok && seen[i] > 0 {
				t.Errorf("live %v: %d keys went to ejected backend %d", live, seen[i], i)
			}
		}
		t.Logf("live %v: keys per backend %v", live, seen)
	}
	st, _ := l.o.Stats()
	if st.NoBackend != uint64(len(keys)) {
		t.Errorf("NoBackend = %d, want %d (the all-ejected round)", st.NoBackend, len(keys))
	}
}

// TestXDPRouteKeyBytes: every byte value, in a key's whole words and in
// its last few bytes, and keys of every length around a word: XDP hashes
// a word at a time (bytes from 0x80 sign-extended, as nutcracker does) and
// must refuse and place exactly as Route does.
func TestXDPRouteKeyBytes(t *testing.T) {
	l := newXDPLab(t)
	for c := range 256 {
		for _, at := range []int{0, 3, 7, 9, 10} {
			key := []byte("abcdefghij!")
			key[at] = byte(c)
			l.checkRequest(l.request(c%2 == 0, 30000, append(append([]byte("get "), key...), "\r\n"...)))
		}
	}
	for n := 1; n <= KeyMax+2; n++ {
		key := make([]byte, n)
		for i := range key {
			key[i] = byte(0x21 + (i*7+n)%0x5e) // printable, varied
		}
		l.checkRequest(l.request(n%2 == 0, 30000, append(append([]byte("get "), key...), "\r\n"...)))
	}
}

// TestXDPFrames: what is not a one-datagram request to the proxy's address
// and port passes untouched.
func TestXDPFrames(t *testing.T) {
	l := newXDPLab(t)
	ok := l.request(false, 40000, []byte("get a\r\n"))
	if l.checkRequest(ok) < 0 {
		t.Fatal("the baseline request is not routed")
	}
	kv1 := l.topo.Host("kv1")
	for name, mut := range map[string]func(*frame.Datagram){
		"two datagrams": func(d *frame.Datagram) { d.Total = 2 },
		"seq 1":         func(d *frame.Datagram) { d.Seq = 1 },
		"other port":    func(d *frame.Datagram) { d.Dst = netip.AddrPortFrom(d.Dst.Addr(), 11212) },
		"to a backend":  func(d *frame.Datagram) { d.Dst = netip.AddrPortFrom(kv1.IPv4(), 11211) },
		"ttl 1":         func(d *frame.Datagram) { d.TTL = 1 },
		"no payload":    func(d *frame.Datagram) { d.Payload = nil },
	} {
		d := ok
		mut(&d)
		in := d.Frame()
		if act, out := l.run(l.fromCli, in); act != xdpPass || !bytes.Equal(in, out) {
			t.Errorf("%s: action %d, changed %v; want XDP_PASS untouched", name, act, !bytes.Equal(in, out))
		}
	}
	// A frame header cut short, and a UDP length beyond the frame.
	in := ok.Frame()
	for _, f := range [][]byte{in[:frame.EthLen+frame.IPv4Len+frame.UDPLen+4], append(in[:len(in)-3:len(in)-3], 0)} {
		f = append([]byte{}, f...)
		if act, out := l.run(l.fromCli, f); act != xdpPass || !bytes.Equal(f, out) {
			t.Errorf("truncated frame (%d bytes): action %d", len(f), act)
		}
	}
	// IPv4 without a UDP checksum keeps none.
	nc := ok
	nc.NoUDPChecksum = true
	if l.checkRequest(nc) < 0 {
		t.Error("request without UDP checksum not routed")
	}
}

// TestXDPReplies: a backend's reply to a client the proxy forwarded for
// comes back from the proxy's address and port; other traffic from the
// backend passes.
func TestXDPReplies(t *testing.T) {
	l := newXDPLab(t)
	proxy := l.topo.Host("proxy")
	for _, v6 := range []bool{false, true} {
		// A key on kv2, asked from client port 41000.
		key := l.keyOn(1)
		req := l.request(v6, 41000, []byte("get "+key+"\r\n"))
		reply, toKV2 := l.replyFrom(1, req)
		reply.Payload = []byte("VALUE " + key + " 0 1\r\nx\r\nEND\r\n")
		in := reply.Frame()
		if act, out := l.run(toKV2, in); act != xdpPass || !bytes.Equal(in, out) {
			t.Fatalf("v6 %v: reply before any request: action %d, want XDP_PASS untouched", v6, act)
		}
		if l.checkRequest(req) != 1 {
			t.Fatalf("key %q not routed to kv2", key)
		}
		act, out := l.run(toKV2, in)
		if act != xdpRedirect {
			t.Fatalf("v6 %v: reply: action %d, want XDP_REDIRECT", v6, act)
		}
		got, err := frame.Parse(out)
		if err != nil {
			t.Fatal(err)
		}
		exp := reply
		exp.Src = req.Dst
		exp.SrcMAC, exp.DstMAC = l.fromCli.MAC, l.client.MAC
		exp.TTL = 63
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("v6 %v: reply sent as\n  %+v\nwant\n  %+v", v6, got, exp)
		}
		// An error reply goes back alike and counts against the backend;
		// a later datagram of a reply is not a reply's first line.
		for _, e := range []struct {
			seq     uint16
			payload string
		}{{0, "CLIENT_ERROR bad data chunk\r\n"}, {1, "ERROR\r\n"}} {
			d := reply
			d.Seq, d.Total, d.Payload = e.seq, 2, []byte(e.payload)
			if act, _ := l.run(toKV2, d.Frame()); act != xdpRedirect {
				t.Fatalf("v6 %v: reply %q: action %d, want XDP_REDIRECT", v6, e.payload, act)
			}
		}
		// The same client port talking to kv1 directly, and kv2 writing
		// to another port of the client: not ours.
		for _, d := range []frame.Datagram{
			func() frame.Datagram { d := reply; d.Dst = netip.AddrPortFrom(req.Src.Addr(), 41001); return d }(),
			func() frame.Datagram {
				d := reply
				d.Src = netip.AddrPortFrom(reply.Src.Addr(), 11212)
				return d
			}(),
		} {
			in := d.Frame()
			if act, out := l.run(toKV2, in); act != xdpPass || !bytes.Equal(in, out) {
				t.Errorf("v6 %v: %s -> %s: action %d, want XDP_PASS untouched", v6, d.Src, d.Dst, act)
			}
		}
	}
	st, _ := l.o.Stats()
	if st.Replies != 6 || st.Backends[1].Replies != 6 || st.Backends[1].Errors != 2 {
		t.Errorf("stats %+v: want 6 replies from kv2, 2 of them errors", st)
	}

	// Reordered backends: index 1 is now kv3. The client's flow was with
	// index 1 = kv2; kv3 writing to that client port is not a reply.
	l.backends[1], l.backends[2] = l.backends[2], l.backends[1]
	l.setBackends(nil)
	toKV3 := proxy.IfaceTo("kv3")
	stray := frame.Datagram{
		SrcMAC: toKV3.Peer.MAC, DstMAC: toKV3.MAC,
		Src: netip.AddrPortFrom(l.topo.Host("kv3").IPv4(), 11211), Dst: netip.AddrPortFrom(l.client.IPv4.Addr(), 41000),
		Total: 1, Payload: []byte("END\r\n"),
	}
	in := stray.Frame()
	if act, out := l.run(toKV3, in); act != xdpPass || !bytes.Equal(in, out) {
		t.Errorf("after reordering backends, kv3 -> client: action %d, want XDP_PASS untouched", act)
	}
}

// FuzzXDPRoute holds the program to Route on arbitrary payloads, over IPv4
// and IPv6. The seeds (run by every go test) are the generator's shapes.
func FuzzXDPRoute(f *testing.F) {
	for i, p := range payloads(rand.New(rand.NewPCG(5, 6)), 64) {
		f.Add(i%2 == 1, p)
	}
	l := newXDPLab(f)
	f.Fuzz(func(t *testing.T, v6 bool, payload []byte) {
		if len(payload) > 2*PayloadMax {
			t.Skip("longer than any frame")
		}
		lt := *l
		lt.t = t
		lt.checkRequest(lt.request(v6, 50000, payload))
	})
}
