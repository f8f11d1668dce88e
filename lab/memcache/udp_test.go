package memcache

import (
	"bytes"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// udpExchange sends one datagram and returns the payloads of the datagrams
// that come back within idle of each other, as messages: a new message
// starts at each datagram with seq 0.
func udpExchange(t *testing.T, c net.Conn, dgram []byte) (msgs []string, hdrs []Header) {
	t.Helper()
	if _, err := c.Write(dgram); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	for {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return msgs, hdrs
			}
			t.Fatal(err)
		}
		h, err := ParseHeader(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
		if h.Seq == 0 || len(msgs) == 0 {
			msgs = append(msgs, "")
		}
		msgs[len(msgs)-1] += string(buf[HeaderLen:n])
	}
}

// TestUDPBehaviour records how memcached 1.6.18 frames UDP requests and
// replies.
func TestUDPBehaviour(t *testing.T) {
	addr := startMemcached(t)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dgram := func(id, seq, total, reserved uint16, payload string) []byte {
		return append(AppendHeader(nil, Header{id, seq, total, reserved}), payload...)
	}
	tcp, err := DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	ctx := t.Context()
	big := strings.Repeat("x", 3000)
	for k, v := range map[string]string{"a": "1", "b": big} {
		if err := tcp.Set(ctx, Item{Key: k, Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	valA := "VALUE a 0 1\r\n1\r\n"
	valB := "VALUE b 0 3000\r\n" + big + "\r\n"
	for _, tc := range []struct {
		name string
		in   []byte
		want []string // messages
	}{
		{"one datagram", dgram(1, 0, 1, 0, "version\r\n"), []string{"VERSION 1.6.18\r\n"}},
		{"seq is not checked", dgram(2, 5, 1, 0, "version\r\n"), []string{"VERSION 1.6.18\r\n"}},
		{"reserved is not checked", dgram(3, 0, 1, 0xffff, "version\r\n"), []string{"VERSION 1.6.18\r\n"}},
		{"total 2 is dropped", dgram(4, 0, 2, 0, "version\r\n"), nil},
		{"total 0 is dropped", dgram(5, 0, 0, 0, "version\r\n"), nil},
		{"header only is dropped", dgram(6, 0, 1, 0, ""), nil},
		{"short header is dropped", []byte{0, 7, 0, 0, 0}, nil},
		// Not recorded: a storage request whose data block is incomplete
		// leaves memcached reading the rest from the next datagrams, their
		// headers included, so later replies are lost or come back under
		// the old request id.
		{"two requests, two messages", dgram(9, 0, 1, 0, "version\r\nget a\r\n"), []string{"VERSION 1.6.18\r\n", valA + "END\r\n"}},
		{"a message per hit, END with the last key", dgram(10, 0, 1, 0, "get a b a\r\n"), []string{valA, valB, valA + "END\r\n"}},
		{"END alone after a miss", dgram(11, 0, 1, 0, "get a b a missing\r\n"), []string{valA, valB, valA, "END\r\n"}},
		{"one miss", dgram(12, 0, 1, 0, "get x\r\n"), []string{"END\r\n"}},
		{"a leading miss sends an empty datagram", dgram(14, 0, 1, 0, "get x a y z\r\n"), []string{"", valA, "END\r\n"}},
		{"error", dgram(13, 0, 1, 0, "bogus\r\n"), []string{"ERROR\r\n"}},
	} {
		msgs, hdrs := udpExchange(t, c, tc.in)
		if !reflect.DeepEqual(msgs, tc.want) {
			t.Errorf("%s: messages\n got %.200q\nwant %.200q", tc.name, msgs, tc.want)
		}
		h, _ := ParseHeader(tc.in)
		for _, got := range hdrs {
			if got.RequestID != h.RequestID || got.Reserved != 0 {
				t.Errorf("%s: reply header %+v", tc.name, got)
			}
		}
	}

	// The empty datagram says it is 0 of 0.
	_, hdrs := udpExchange(t, c, dgram(15, 0, 1, 0, "gets x y\r\n"))
	if want := []Header{{15, 0, 0, 0}, {15, 0, 1, 0}}; !reflect.DeepEqual(hdrs, want) {
		t.Errorf("headers of a two-miss gets: %+v, want %+v", hdrs, want)
	}

	// Long messages are split into 1400-byte datagrams with seq/total.
	_, hdrs = udpExchange(t, c, dgram(20, 0, 1, 0, "get b\r\n"))
	want := []Header{{20, 0, 3, 0}, {20, 1, 3, 0}, {20, 2, 3, 0}}
	if !reflect.DeepEqual(hdrs, want) {
		t.Errorf("headers of a 3000-byte value: %+v", hdrs)
	}
	if _, err := c.Write(dgram(21, 0, 1, 0, "get b\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	c.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := c.Read(buf); err != nil || n != MaxDatagram || !bytes.HasPrefix(buf[HeaderLen:n], []byte("VALUE b")) {
		t.Errorf("first datagram: %d bytes, %v", n, err)
	}

	// The client puts all of these together.
	u, err := DialUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, raw := range []string{"get x a y z\r\n", "gets x y\r\n", "get a b a missing\r\n", "version\r\nget a\r\n"} {
		ru, err1 := u.Do(ctx, []byte(raw))
		rt, err2 := tcp.Do(ctx, []byte(raw))
		if err1 != nil || err2 != nil || !bytes.Equal(ru, rt) {
			t.Errorf("%q: UDP %.80q, %v; TCP %.80q, %v", raw, ru, err1, rt, err2)
		}
	}
}
