package kv

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/xdplab/xdplab/lab/memcache"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// rawUDP sends hand-made datagrams and collects the replies to one request
// id. The reply is complete when the reply to a "version" sent behind it
// arrives: the store's slow path and a one-thread memcached both work
// through their socket in order, and the store's XDP answers at once, so
// whatever the request gets comes before that. Nothing waits on a clock
// except the generous deadline that turns a lost sentinel into a failure.
type rawUDP struct {
	c      *net.UDPConn
	nextID uint16
}

func frameHdr(id, seq, total, reserved uint16) []byte {
	return memcache.AppendHeader(nil, memcache.Header{RequestID: id, Seq: seq, Total: total, Reserved: reserved})
}

// exchange sends the datagrams (built by mk with the request id to use) and
// returns the concatenated payloads of every reply datagram with that id.
func (r *rawUDP) exchange(mk func(id uint16) [][]byte) ([]byte, error) {
	r.nextID += 2
	id, sentinel := r.nextID, r.nextID+1
	for _, d := range mk(id) {
		if _, err := r.c.Write(d); err != nil {
			return nil, err
		}
	}
	if _, err := r.c.Write(append(frameHdr(sentinel, 0, 1, 0), "version\r\n"...)); err != nil {
		return nil, err
	}
	var reply []byte
	buf := make([]byte, 1<<16)
	// Generous: in a guest under emulation memcached answers a 150-command
	// datagram 10-35 times slower than here.
	r.c.SetReadDeadline(time.Now().Add(replyWait))
	for {
		n, err := r.c.Read(buf)
		if err != nil {
			return reply, fmt.Errorf("no reply to the sentinel: %w", err)
		}
		h, err := memcache.ParseHeader(buf[:n])
		if err != nil {
			return reply, fmt.Errorf("reply without a frame header: %q", buf[:n])
		}
		switch h.RequestID {
		case id:
			reply = append(reply, buf[memcache.HeaderLen:n]...)
		case sentinel:
			if !bytes.HasPrefix(buf[memcache.HeaderLen:n], []byte("VERSION ")) {
				return reply, fmt.Errorf("sentinel got %q", buf[memcache.HeaderLen:n])
			}
			return reply, nil
		}
	}
}

// one is a single well-framed datagram.
func one(payload string) func(uint16) [][]byte {
	return func(id uint16) [][]byte { return [][]byte{append(frameHdr(id, 0, 1, 0), payload...)} }
}

// TestBadInput sends malformed and unusual requests to memcached and to the
// store over the veth pair: every one must get memcached's reply, byte for
// byte (or nothing when memcached sends nothing), and the stored items
// must be intact afterwards.
func TestBadInput(t *testing.T) {
	l := newVethLab(t, Config{MaxValue: 256}, true)
	big := strings.Repeat("B", 700) // lives in the slow path
	seed := []struct{ key, val string }{{"keep", "small"}, {"keepbig", big}, {"num", "42"}}
	for _, v6 := range []bool{false, true} {
		servers := [2]*rawUDP{{c: l.dialRaw(t, l.mcAddr(v6))}, {c: l.dialRaw(t, l.storeAddr(v6))}}
		for _, s := range servers {
			for _, it := range seed {
				got, err := s.exchange(one(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", it.key, len(it.val), it.val)))
				if err != nil || string(got) != "STORED\r\n" {
					t.Fatalf("seeding: %q %v", got, err)
				}
			}
		}
		k251 := strings.Repeat("k", 251)
		k250 := strings.Repeat("k", 250)
		cases := []struct {
			name string
			mk   func(uint16) [][]byte
		}{
			{"short datagram", func(uint16) [][]byte { return [][]byte{{0, 7, 0, 0, 0}} }},
			{"header only", one("")},
			{"total 0", func(id uint16) [][]byte { return [][]byte{append(frameHdr(id, 0, 0, 0), "get keep\r\n"...)} }},
			{"total 2", func(id uint16) [][]byte { return [][]byte{append(frameHdr(id, 0, 2, 0), "get keep\r\n"...)} }},
			{"seq 5 of 1", func(id uint16) [][]byte { return [][]byte{append(frameHdr(id, 5, 1, 0), "get keep\r\n"...)} }},
			{"seq 5 of 1 set", func(id uint16) [][]byte {
				return [][]byte{append(frameHdr(id, 5, 1, 0), "set s5 0 0 1\r\nx\r\n"...)}
			}},
			{"reserved set", func(id uint16) [][]byte { return [][]byte{append(frameHdr(id, 0, 1, 0x8001), "get keep\r\n"...)} }},
			{"two datagrams", func(id uint16) [][]byte {
				return [][]byte{append(frameHdr(id, 0, 2, 0), "set two 0 0 3\r\n"...), append(frameHdr(id, 1, 2, 0), "abc\r\n"...)}
			}},
			{"unknown command", one("bogus\r\n")},
			{"upper case", one("GET keep\r\n")},
			{"empty line", one("\r\n")},
			{"bare LF", one("\n")},
			{"one letter", one("x\r\n")},
			{"get without key", one("get\r\n")},
			{"tab separated", one("get\tkeep\r\n")},
			{"get 251-byte key", one("get " + k251 + "\r\n")},
			{"get 250-byte key", one("get " + k250 + "\r\n")},
			{"get 25 keys", one("get" + strings.Repeat(" keep", 25) + "\r\n")},
			{"set 251-byte key", one("set " + k251 + " 0 0 1\r\nx\r\n")},
			{"set 250-byte key", one("set " + k250 + " 0 0 1\r\nx\r\n")},
			{"delete 251-byte key", one("delete " + k251 + "\r\n")},
			{"incr 251-byte key", one("incr " + k251 + " 1\r\n")},
			{"touch 251-byte key", one("touch " + k251 + " 0\r\n")},
			{"flags not a number", one("set bad 1x 0 1\r\nx\r\n")},
			{"negative flags", one("set bad -1 0 1\r\nx\r\n")},
			{"flags wrap", one("set wrap 4294967297 0 1\r\nx\r\n")},
			{"exptime not a number", one("set bad 0 x 1\r\nx\r\n")},
			{"exptime wraps", one("set wrapx 0 4294967296 1\r\nx\r\n")},
			{"negative length", one("set bad 0 0 -1\r\nx\r\n")},
			{"huge length", one("set bad 0 0 99999999999999999999\r\nx\r\n")},
			{"length not a number", one("set bad 0 0 1x\r\nx\r\n")},
			{"too few tokens", one("set bad 0 0\r\nx\r\n")},
			{"too many tokens", one("set bad 0 0 1 2 3\r\nx\r\n")},
			{"cas without unique", one("cas keep 0 0 1\r\nx\r\n")},
			{"cas unique not a number", one("cas keep 0 0 1 x\r\nx\r\n")},
			{"incr not a number", one("incr num abc\r\n")},
			{"incr negative", one("incr num -1\r\n")},
			{"incr overflow", one("decr num 18446744073709551616\r\n")},
			{"incr plus", one("incr num +1\r\n")},
			{"incr too few", one("incr num\r\n")},
			{"touch bad exptime", one("touch keep x\r\n")},
			{"delete extra", one("delete keep 1\r\n")},
			{"delete hold 0", one("delete nothere 0\r\n")},
			{"data longer", one("set long 0 0 3\r\nabcd\r\n")},
			{"data shorter", one("set short 0 0 2\r\nabc\r\n")},
			{"data without CRLF", one("set nocrlf 0 0 3\r\nabcxy")},
			{"data with LF only", one("set lf 0 0 3\r\nabc\nx")},
			{"no newline", one("get keep")},
			{"LF line", one("get keep\n")},
			{"CR in line", one("get ke\rep\r\n")},
			{"NUL first", one("\x00get keep\r\n")},
			{"NUL in line", one("get keep\x00 more\r\n")},
			{"NUL in key of set", one("set nul\x00 0 0 1\r\nx\r\n")},
			{"NUL in data", one("set nuldata 0 0 3\r\na\x00b\r\n")},
			{"noreply error", one("incr num abc noreply\r\n")},
			{"noreply get", one("get keep noreply\r\n")},
			{"two gets", one("get keep\r\nget num\r\n")},
			{"get then set", one("get keep\r\nset gs 0 0 1\r\n1\r\n")},
			{"set then get", one("set sg 0 0 1\r\n2\r\nget sg\r\n")},
			{"set noreply then get", one("set sng 0 0 1 noreply\r\n3\r\nget sng\r\n")},
			{"incr then garbage", one("incr num 1\r\nbogus\r\n")},
			{"delete then get", one("delete sg\r\nget sg\r\n")},
			{"long key drops queued replies", one("get keep\r\nset dp 0 0 1\r\n1\r\nget " + k251 + "\r\nget dp\r\n")},
			{"stats args", one("stats nonsense\r\n")},
			{"verbosity", one("verbosity 1\r\n")},
			{"binary magic", one("\x80\x00\x00\x00")},
			{"leading spaces", one("   get   keep   \r\n")},
			{"trailing junk token", one("incr num 1 x\r\n")},
		}
		for _, tc := range cases {
			var reps [2][]byte
			for i, s := range servers {
				r, err := s.exchange(tc.mk)
				if err != nil {
					t.Fatalf("%s (v6 %v) to %s: %v", tc.name, v6, []string{"memcached", "store"}[i], err)
				}
				reps[i] = r
			}
			if !bytes.Equal(reps[0], reps[1]) {
				t.Errorf("%s (v6 %v):\n memcached %.300q\n store     %.300q", tc.name, v6, reps[0], reps[1])
			}
		}
		// Known divergence: memcached 1.6 also has gat/gats and the meta
		// commands; the store answers them as unknown commands.
		for _, raw := range []string{"gat 0 keep\r\n", "gats 0 keep\r\n", "mg keep v\r\n", "mn\r\n"} {
			if r, err := servers[1].exchange(one(raw)); err != nil || string(r) != "ERROR\r\n" {
				t.Errorf("%q: store replied %q, %v", raw, r, err)
			}
		}
		// A datagram starting with a reply is another server's answer:
		// memcached says ERROR to it, the store nothing, so that two
		// servers cannot be set answering each other (memcache.Unanswerable).
		for _, raw := range []string{"ERROR\r\n", "END\r\n", "VALUE keep 0 1\r\nx\r\nEND\r\n", "STORED\r\n", "42\r\n", "  CLIENT_ERROR bad\r\n", "VERSION 1.6.18\r\n"} {
			if r, err := servers[1].exchange(one(raw)); err != nil || len(r) != 0 {
				t.Errorf("%q: store replied %q, %v", raw, r, err)
			}
		}
		// A storage request whose data block the datagram does not finish
		// leaves memcached reading the next datagrams as data, headers
		// included; the store treats each datagram on its own. So only the
		// store gets these: no reply, and nothing stored.
		for _, raw := range []string{"set dangling 0 0 10\r\nabc", "set dangling 0 0 3\r\nabc", "set dangling 0 0 3\r\nabc\r", "set dangling 0 0 3\r\nabc\n"} {
			if r, err := servers[1].exchange(one(raw)); err != nil || len(r) != 0 {
				t.Errorf("%q: store replied %q, %v", raw, r, err)
			}
		}
		// Stored data intact, on both.
		for i, s := range servers {
			for _, it := range seed {
				want := fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", it.key, len(it.val), it.val)
				if it.key == "num" {
					// "incr plus", "incr then garbage" and "trailing junk
					// token" added one each.
					want = "VALUE num 0 2\r\n45\r\nEND\r\n"
				}
				if got, err := s.exchange(one("get " + it.key + "\r\n")); err != nil || string(got) != want {
					t.Errorf("v6 %v: %s after the bad input: %.100q %v, want %.100q", v6, []string{"memcached", "store"}[i], got, err, want)
				}
			}
			if got, err := s.exchange(one("get dangling\r\n")); err != nil || string(got) != "END\r\n" {
				t.Errorf("%s holds dangling: %q %v", []string{"memcached", "store"}[i], got, err)
			}
		}
	}
}

// TestFragments sends requests larger than the veth's MTU: the kernel
// fragments them, XDP passes the fragments, and the stack reassembles
// them for the slow path, as for memcached.
func TestFragments(t *testing.T) {
	l := newVethLab(t, Config{MaxValue: 256}, true)
	for _, v6 := range []bool{false, true} {
		servers := [2]*rawUDP{{c: l.dialRaw(t, l.mcAddr(v6))}, {c: l.dialRaw(t, l.storeAddr(v6))}}
		val := strings.Repeat("F", 2900)
		var multi []string
		for i := range 120 {
			multi = append(multi, fmt.Sprintf("frag%03d", i))
		}
		for _, req := range []string{
			fmt.Sprintf("set frag 3 0 %d\r\n%s\r\n", len(val), val),
			"get frag\r\n",
			"get frag " + strings.Join(multi, " ") + " frag\r\n",
			"set small 0 0 1\r\nx\r\n" + strings.Repeat("get small\r\n", 150),
		} {
			// UDP may lose a datagram, and does when a loaded guest's
			// client drains its veth ring slower than a server fills it
			// with a 250-datagram reply: as memcached's UDP clients do, ask
			// again (every request here is idempotent), saying why.
			var reps [2][]byte
			for try := 1; ; try++ {
				for i, s := range servers {
					r, err := s.exchange(one(req))
					if err != nil && try == 3 {
						t.Fatalf("v6 %v %.40q to %s: %v", v6, req, []string{"memcached", "store"}[i], err)
					}
					reps[i] = r
				}
				if bytes.Equal(reps[0], reps[1]) && len(reps[0]) > 0 {
					break
				}
				if try == 3 {
					t.Fatalf("v6 %v %.40q: memcached %d bytes %.80q, store %d bytes %.80q", v6, req, len(reps[0]), reps[0], len(reps[1]), reps[1])
				}
				t.Logf("v6 %v %.40q, try %d: memcached %d bytes, store %d bytes; asking again (client drops: %s)", v6, req, try, len(reps[0]), len(reps[1]), l.clientDrops())
			}
		}
	}
}

// clientDrops says what the client's devices dropped on receive, which
// tells a datagram lost on the way from one lost in a server.
func (l *vethLab) clientDrops() string {
	var b strings.Builder
	l.client.Do(func() error {
		links, err := netlink.LinkList()
		for _, lk := range links {
			if st := lk.Attrs().Statistics; st != nil && lk.Attrs().Name != "lo" {
				fmt.Fprintf(&b, "%s rx_dropped %d; ", lk.Attrs().Name, st.RxDropped)
			}
		}
		return err
	})
	return strings.TrimSuffix(b.String(), "; ")
}

// TestOtherTrafficPasses checks the store leaves alone what is not for it:
// UDP and TCP to other ports (even carrying a memcached request), and ping.
func TestOtherTrafficPasses(t *testing.T) {
	l := newVethLab(t, Config{}, false)
	rx := l.stat(t, "xdp_rx")

	// Echo servers in kv's namespace.
	var uconn *net.UDPConn
	var tl net.Listener
	err := l.kv.Do(func() (err error) {
		if uconn, err = net.ListenUDP("udp", &net.UDPAddr{Port: 7777}); err != nil {
			return err
		}
		tl, err = net.Listen("tcp", ":7778")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer uconn.Close()
	defer tl.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := uconn.ReadFrom(buf)
			if err != nil {
				return
			}
			uconn.WriteTo(buf[:n], from)
		}
	}()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()

	msg := append(frameHdr(1, 0, 1, 0), "get keep\r\n"...)
	for _, v6 := range []bool{false, true} {
		a := l.kv.IPv4()
		if v6 {
			a = l.kv.IPv6()
		}
		var c *net.UDPConn
		var tc net.Conn
		err := l.client.Do(func() (err error) {
			if c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 7777))); err != nil {
				return err
			}
			tc, err = net.Dial("tcp", netip.AddrPortFrom(a, 7778).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		defer tc.Close()
		for _, conn := range []net.Conn{c, tc} {
			if _, err := conn.Write(msg); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(replyWait))
			buf := make([]byte, 100)
			n, err := conn.Read(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Errorf("echo on %s: %q %v, want %q", conn.RemoteAddr(), buf[:n], err, msg)
			}
		}
		if err := l.client.Do(func() error { return ping(a) }); err != nil {
			t.Errorf("ping %s: %v", a, err)
		}
	}
	if d := l.stat(t, "xdp_rx") - rx; d != 0 {
		t.Errorf("xdp_rx grew by %d on traffic to other ports", d)
	}
}

// ping sends one ICMP (or ICMPv6) echo request to a and waits for the reply.
func ping(a netip.Addr) error {
	network, proto := "ip4:icmp", 1
	var typ, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if a.Is6() {
		network, proto = "ip6:ipv6-icmp", 58
		typ, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, "")
	if err != nil {
		return err
	}
	defer c.Close()
	payload := []byte("xdplab ping")
	b, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: 0x4b56, Seq: 1, Data: payload}}).Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: a.AsSlice()}); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.Seq != 1 || !bytes.Equal(e.Data, payload) {
			continue
		}
		if from.String() != a.String() {
			return fmt.Errorf("reply from %s", from)
		}
		return nil
	}
}

// TestBadInputTCP is TestBadInput over TCP, where memcached reads a stream:
// values too large for it, over-long lines, and requests split anywhere.
func TestBadInputTCP(t *testing.T) {
	l := newVethLab(t, Config{MaxValue: 256}, true)
	huge := strings.Repeat("H", 1<<20)
	for _, tc := range []struct{ name, in string }{
		{"value too large", "set huge 0 0 " + fmt.Sprint(len(huge)) + "\r\n" + huge + "\r\nget huge\r\n"},
		{"too large noreply", "set huge 0 0 " + fmt.Sprint(len(huge)) + " noreply\r\n" + huge + "\r\nget huge\r\n"},
		{"largest value", "set big 0 0 1048510\r\n" + huge[:1048510] + "\r\nget small\r\n"},
		{"data longer", "set x 0 0 3\r\nabcd\r\nget x\r\n"},
		{"rejected line, data read as a command", "set " + strings.Repeat("k", 251) + " 0 0 3\r\nget\r\n"},
		{"pipelined", "set p 0 0 1\r\n1\r\nincr p 5\r\nget p\r\ndelete p\r\nget p\r\n"},
		{"get with long key drops queued replies", "get a\r\nset q 0 0 1\r\n1\r\nget " + strings.Repeat("k", 251) + "\r\nget q\r\n"},
		// memcached sends its queue after 21 requests of a read, then every 20.
		{"long key after 20 sets", strings.Repeat("set q 0 0 1\r\n1\r\n", 20) + "get " + strings.Repeat("k", 251) + "\r\n"},
		{"long key after 45 sets", strings.Repeat("set q 0 0 1\r\n1\r\n", 45) + "get " + strings.Repeat("k", 251) + "\r\n"},
		{"long key after get and 30 sets", "get q\r\n" + strings.Repeat("set q 0 0 1\r\n1\r\n", 30) + "get " + strings.Repeat("k", 251) + "\r\n"},
		{"2048 bytes without newline", strings.Repeat("x", 2048) + "\r\n"},
		{"long get line", "get " + strings.Repeat("k1 ", 1000) + "\r\n"},
	} {
		var reps [2]string
		for i, addr := range []string{l.mcAddr(false), l.storeAddr(false)} {
			var c net.Conn
			err := l.client.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err })
			if err != nil {
				t.Fatal(err)
			}
			// The sentinel's reply ends the exchange, as over UDP.
			go c.Write([]byte(tc.in + "version\r\n"))
			c.SetReadDeadline(time.Now().Add(replyWait))
			var got []byte
			buf := make([]byte, 1<<16)
			for !bytes.Contains(got, []byte("VERSION ")) {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					t.Fatalf("%s to %s: %v after %.200q", tc.name, []string{"memcached", "store"}[i], err, got)
				}
			}
			c.Close()
			reps[i] = string(got[:bytes.LastIndex(got, []byte("VERSION "))])
		}
		if reps[0] != reps[1] {
			t.Errorf("%s:\n memcached %.300q\n store     %.300q", tc.name, reps[0], reps[1])
		}
	}
}
