package reflector

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
)

// frame builds an Ethernet frame holding a UDP datagram from src to dst,
// with a valid IPv4 header checksum and UDP checksum.
func frame(src, dst netip.AddrPort, payload []byte) []byte {
	v6 := dst.Addr().Is6() && !dst.Addr().Is4In6()
	f := make([]byte, 14, 128+len(payload))
	copy(f, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1})
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp, src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	if v6 {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
		ip[6], ip[7] = 17, 64
		copy(ip[8:], s)
		copy(ip[24:], d)
		f = append(f, ip...)
	} else {
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		ip[8], ip[9] = 64, 17
		copy(ip[12:], s)
		copy(ip[16:], d)
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip)))
		f = append(f, ip...)
	}
	binary.BigEndian.PutUint16(udp[6:], ^fold(sum(pseudo(s, d, len(udp)))+sum(udp)))
	return append(f, udp...)
}

func pseudo(s, d []byte, n int) []byte {
	p := append(append([]byte{}, s...), d...)
	if len(s) == 4 {
		return append(p, 0, 17, byte(n>>8), byte(n))
	}
	return append(p, 0, 0, byte(n>>8), byte(n), 0, 0, 0, 17)
}

func sum(b []byte) uint64 {
	var s uint64
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i]) << 8
		if i+1 < len(b) {
			w |= uint64(b[i+1])
		}
		s += w
	}
	return s
}

func fold(s uint64) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// parse checks an output frame's headers and UDP checksum and returns its
// addresses and payload.
func parse(t *testing.T, f []byte) (src, dst netip.AddrPort, payload []byte) {
	t.Helper()
	var s, d []byte
	var udp []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		ip := f[14:34]
		if fold(sum(ip)) != 0xffff {
			t.Errorf("IPv4 header checksum wrong")
		}
		s, d, udp = ip[12:16], ip[16:20], f[34:]
		if n := int(binary.BigEndian.Uint16(ip[2:])); n != 20+len(udp) {
			t.Errorf("IPv4 total length %d, frame holds %d", n, 20+len(udp))
		}
	default:
		ip := f[14:54]
		s, d, udp = ip[8:24], ip[24:40], f[54:]
		if n := int(binary.BigEndian.Uint16(ip[4:])); n != len(udp) {
			t.Errorf("IPv6 payload length %d, frame holds %d", n, len(udp))
		}
	}
	if n := int(binary.BigEndian.Uint16(udp[4:])); n != len(udp) {
		t.Fatalf("UDP length %d, frame holds %d", n, len(udp))
	}
	if fold(sum(pseudo(s, d, len(udp)))+sum(udp)) != 0xffff {
		t.Errorf("UDP checksum wrong")
	}
	sa, _ := netip.AddrFromSlice(s)
	da, _ := netip.AddrFromSlice(d)
	return netip.AddrPortFrom(sa, binary.BigEndian.Uint16(udp)), netip.AddrPortFrom(da, binary.BigEndian.Uint16(udp[2:])), udp[8:]
}

func load(t *testing.T, cfg Config) *Reflector {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	netlab.RemoveMemlock()
	r, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func run(t *testing.T, r *Reflector, f []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+2048)}
	ret, err := r.Program().Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	return ret, opts.DataOut
}

func msg(id uint16, s string) []byte {
	return append(memcache.AppendHeader(nil, memcache.Header{RequestID: id, Total: 1}), s...)
}

// TestReflectorReply: a GET of the configured key size gets the bytes a
// store GET hit gives, with its request id and the key asked for, over IPv4
// and IPv6, from any value size up to a datagram; a SET gets STORED.
func TestReflectorReply(t *testing.T) {
	const (
		xdpTX   = 3
		xdpPass = 2
	)
	for _, vsize := range []int{0, 1, 100, 333, 1000} {
		value := make([]byte, vsize)
		for i := range value {
			value[i] = 'a' + byte(i%26)
		}
		r := load(t, Config{Port: 11211, KeySize: 15, Value: value})
		for _, pair := range [][2]string{{"198.18.0.2", "198.18.0.1"}, {"fd00::2", "fd00::1"}} {
			cl := netip.AddrPortFrom(netip.MustParseAddr(pair[0]), 40000)
			sv := netip.AddrPortFrom(netip.MustParseAddr(pair[1]), 11211)
			key := "b:0000000001234"
			ret, out := run(t, r, frame(cl, sv, msg(0xbeef, "get "+key+"\r\n")))
			if ret != xdpTX {
				t.Fatalf("value %d, %v: GET action %d, want XDP_TX", vsize, sv.Addr(), ret)
			}
			src, dst, p := parse(t, out)
			if src != sv || dst != cl {
				t.Errorf("reply from %v to %v, want %v to %v", src, dst, sv, cl)
			}
			if want := append(msg(0xbeef, ""), Reply([]byte(key), value)...); !bytes.Equal(p, want) {
				t.Errorf("value %d, %v: reply\n%q\nwant\n%q", vsize, sv.Addr(), p, want)
			}
			ret, out = run(t, r, frame(cl, sv, msg(7, "set "+key+" 0 0 3\r\nabc\r\n")))
			if ret != xdpTX {
				t.Fatalf("SET action %d, want XDP_TX", ret)
			}
			if _, _, p := parse(t, out); !bytes.Equal(p, msg(7, "STORED\r\n")) {
				t.Errorf("SET reply %q", p)
			}
		}
		st, err := r.Stats()
		if err != nil || st.Gets != 2 || st.Sets != 2 || st.Passed != 0 {
			t.Errorf("stats %+v, %v", st, err)
		}
	}
	_ = xdpPass
}

// TestReflectorPasses: what is not a GET or SET of the benchmark's shape to
// the lab's addresses on the reflector's port passes untouched.
func TestReflectorPasses(t *testing.T) {
	r := load(t, Config{Port: 11300, KeySize: 4, Value: []byte("v")})
	cl := netip.MustParseAddrPort("198.18.0.2:40000")
	sv := netip.MustParseAddrPort("198.18.0.1:11300")
	for _, c := range []struct {
		name     string
		src, dst netip.AddrPort
		payload  []byte
	}{
		{"not the lab's address", cl, netip.MustParseAddrPort("10.0.0.1:11300"), msg(1, "get abcd\r\n")},
		{"not the lab's IPv6 address", netip.MustParseAddrPort("[fd00::2]:40000"), netip.MustParseAddrPort("[2001:db8::1]:11300"), msg(1, "get abcd\r\n")},
		{"another port", cl, netip.MustParseAddrPort("198.18.0.1:11211"), msg(1, "get abcd\r\n")},
		{"from memcached's port", netip.MustParseAddrPort("198.18.0.2:11211"), sv, msg(1, "get abcd\r\n")},
		{"from a well-known port", netip.MustParseAddrPort("198.18.0.2:53"), sv, msg(1, "get abcd\r\n")},
		{"another key size", cl, sv, msg(1, "get abcde\r\n")},
		{"two keys", cl, sv, msg(1, "get ab c\r\n")},
		{"no CRLF", cl, sv, msg(1, "get abcd  \n")},
		{"gets", cl, sv, msg(1, "gets abcd\r\n")},
		{"delete", cl, sv, msg(1, "delete abcd\r\n")},
		{"second datagram", cl, sv, append(memcache.AppendHeader(nil, memcache.Header{RequestID: 1, Seq: 1, Total: 2}), "get abcd\r\n"...)},
		{"short", cl, sv, msg(1, "get")},
	} {
		f := frame(c.src, c.dst, c.payload)
		ret, out := run(t, r, f)
		if ret != 2 || !bytes.Equal(out, f) {
			t.Errorf("%s: action %d (want XDP_PASS), frame changed: %v", c.name, ret, !bytes.Equal(out, f))
		}
	}
	// And the shape it does answer, as a control.
	if ret, _ := run(t, r, frame(cl, sv, msg(1, "get abcd\r\n"))); ret != 3 {
		t.Errorf("control GET: action %d, want XDP_TX", ret)
	}
}

// BenchmarkReflectorXDP is the reflector's cost per GET in
// BPF_PROG_TEST_RUN (one run per request, as lab/kv's BenchmarkXDP/GetHit
// measures the store's: same key and value sizes), the floor under any
// store's: `go test -run '^$' -bench ReflectorXDP ./lab/bench/reflector`.
func BenchmarkReflectorXDP(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	netlab.RemoveMemlock()
	value := make([]byte, 100)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	r, err := Load(Config{Port: 11211, KeySize: 16, Value: value})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, pair := range [][2]string{{"198.18.0.2", "198.18.0.1"}, {"fd00::2", "fd00::1"}} {
		cl := netip.AddrPortFrom(netip.MustParseAddr(pair[0]), 40000)
		sv := netip.AddrPortFrom(netip.MustParseAddr(pair[1]), 11211)
		f := frame(cl, sv, msg(1, "get b:00000000000001\r\n"))
		name := "GetHit"
		if sv.Addr().Is6() {
			name += "IPv6"
		}
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				ret, d, err := r.Program().Benchmark(f, 1, nil)
				if err != nil || ret != 3 {
					b.Fatalf("action %d, %v", ret, err)
				}
				total += d
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/req")
		})
	}
}
