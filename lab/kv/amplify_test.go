package kv

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestUDPAmplification asks for the largest replies a short request can
// buy, with memcached's behaviour (no caps) and with the store's defaults:
// with the defaults no UDP reply passes its cap, and the worst ratio of
// reply to request bytes is logged for both.
func TestUDPAmplification(t *testing.T) {
	huge := strings.Repeat("H", 1<<20-512) // memcached's largest item, near enough
	val := strings.Repeat("v", 1000)       // fits XDP's slot
	multi := "get" + strings.Repeat(" k", 24) + "\r\n"
	reqs := []string{"get k\r\n", "get huge\r\n", multi, "stats\r\n"}
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"memcached's behaviour", Config{UDPReplyMax: Unlimited, UDPRate: Unlimited}},
		{"defaults", Config{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newVethLab(t, c.cfg, false)
			tcp := l.dial(t, "tcp", l.storeAddr(false))
			for k, v := range map[string]string{"k": val, "huge": huge} {
				if r, err := doCtx(tcp, fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", k, len(v), v)); err != nil || r != "STORED\r\n" {
					t.Fatalf("set %s: %q %v", k, r, err)
				}
			}
			raw := &rawUDP{c: l.dialRaw(t, l.storeAddr(false))}
			worst, worstReq := 0.0, ""
			for _, req := range reqs {
				got, err := raw.exchange(one(req))
				if err != nil {
					t.Fatalf("%q: %v", req, err)
				}
				// Bytes a request buys: UDP payloads, frame headers and all.
				in, out := len(req)+frameLen, len(got)+frameLen*(1+len(got)/defaultReplyMax)
				if r := float64(out) / float64(in); r > worst {
					worst, worstReq = r, req
				}
				if l.o.cfg.UDPReplyMax != Unlimited && len(got) > l.o.cfg.UDPReplyMax {
					t.Errorf("%.20q: %d-byte reply over the %d-byte cap", req, len(got), l.o.cfg.UDPReplyMax)
				}
				if l.o.cfg.UDPReplyMax != Unlimited && len(req) < 20 && len(got) > defaultReplyMax/2 && strings.HasPrefix(req, "get huge") {
					t.Errorf("get huge: %.40q, want the error naming TCP", got)
				}
			}
			t.Logf("worst UDP reply/request: %.0fx bytes (%.20q)", worst, worstReq)
			if l.o.cfg.UDPReplyMax != Unlimited {
				if n := l.stat(t, "udp_too_large"); n < 2 {
					t.Errorf("udp_too_large %d, want 2 or more (get huge, the multi-get)", n)
				}
				// A datagram of gets of the 1 MB item is refused without
				// building its gigabyte first.
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				many := "get" + strings.Repeat(" huge", 1000) + "\r\n"
				if got, err := raw.exchange(one(many)); err != nil || string(got) != string(replyTooLargeForUDP) {
					t.Errorf("1000 gets of a 1 MB item in a datagram: %.60q %v", got, err)
				}
				runtime.ReadMemStats(&m1)
				if grew := m1.TotalAlloc - m0.TotalAlloc; grew > 64<<20 {
					t.Errorf("the slow path allocated %d MiB for a refused reply", grew>>20)
				}
				// Refused over UDP, served over TCP.
				if r, err := doCtx(tcp, "get huge\r\n"); err != nil || len(r) < len(huge) {
					t.Errorf("get huge over TCP: %d bytes %v", len(r), err)
				}
			}
		})
	}
}

// TestUDPAmplificationRatio: with a ratio cap, a get whose reply outgrows
// its request that many times gets the error, in XDP's case too (XDP hands
// it up); a smaller one is served.
func TestUDPAmplificationRatio(t *testing.T) {
	l := newVethLab(t, Config{UDPAmplification: 4}, false)
	tcp := l.dial(t, "tcp", l.storeAddr(false))
	for k, v := range map[string]string{"small": "abc", "big": strings.Repeat("b", 200)} {
		if r, err := doCtx(tcp, fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", k, len(v), v)); err != nil || r != "STORED\r\n" {
			t.Fatalf("set: %q %v", r, err)
		}
	}
	raw := &rawUDP{c: l.dialRaw(t, l.storeAddr(false))}
	for req, want := range map[string]string{
		"get small\r\n": "VALUE small 0 3\r\nabc\r\nEND\r\n",
		"get big\r\n":   string(replyTooLargeForUDP),
	} {
		if got, err := raw.exchange(one(req)); err != nil || string(got) != want {
			t.Errorf("%q: %.60q %v, want %.60q", req, got, err, want)
		}
	}
}

// TestUDPRateLimit: XDP sends one source no more reply bytes than its
// bucket holds, drops (and counts) the rest, and serves it again once the
// bucket refills.
func TestUDPRateLimit(t *testing.T) {
	const rate, burst = 10000, 4000
	l := newVethLab(t, Config{UDPRate: rate, UDPBurst: burst}, false)
	val := strings.Repeat("r", 1000)
	tcp := l.dial(t, "tcp", l.storeAddr(false))
	if r, err := doCtx(tcp, fmt.Sprintf("set r 0 0 %d\r\n%s\r\n", len(val), val)); err != nil || r != "STORED\r\n" {
		t.Fatalf("set: %q %v", r, err)
	}
	raw := &rawUDP{c: l.dialRaw(t, l.storeAddr(false))}
	const asks = 20
	start := time.Now()
	got := 0
	for range asks {
		r, err := raw.exchange(one("get r\r\n")) // the sentinel goes to the slow path, which XDP does not charge
		if err != nil {
			t.Fatal(err)
		}
		if len(r) > 0 {
			got++
		}
	}
	// The bucket's bytes, and what refilled while we asked.
	allowed := (burst + int(time.Since(start).Seconds()*rate)) / (len(val) + 20)
	t.Logf("%d of %d replies of %d bytes in %v at %d bytes/s, bursts of %d", got, asks, len(val)+20, time.Since(start), rate, burst)
	if got == 0 || got > allowed+1 {
		t.Errorf("%d replies, want 1..%d", got, allowed+1)
	}
	if d := l.stat(t, "rate_drop"); d != uint64(asks-got) {
		t.Errorf("rate_drop %d, want %d", d, asks-got)
	}
	time.Sleep(time.Duration(burst * float64(time.Second) / rate))
	if r, err := raw.exchange(one("get r\r\n")); err != nil || len(r) == 0 {
		t.Errorf("after the bucket refilled: %q %v", r, err)
	}
}

// TestNoUDP: with UDP off nothing answers UDP, XDP included, and TCP
// serves, through XDP's code as ever.
func TestNoUDP(t *testing.T) {
	l := newVethLab(t, Config{NoUDP: true}, false)
	tcp := l.dial(t, "tcp", l.storeAddr(false))
	if r, err := doCtx(tcp, "set a 0 0 1\r\nx\r\n"); err != nil || r != "STORED\r\n" {
		t.Fatalf("TCP set: %q %v", r, err)
	}
	udp := l.dial(t, "udp", l.storeAddr(false))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if r, err := udp.Do(ctx, []byte("get a\r\n")); err == nil {
		t.Errorf("UDP get with UDP off: %q", r)
	}
	if tx := l.stat(t, "xdp_tx"); tx != 0 {
		t.Errorf("xdp_tx %d with UDP off", tx)
	}
	if r, err := doCtx(tcp, "get a\r\n"); err != nil || r != "VALUE a 0 1\r\nx\r\nEND\r\n" {
		t.Errorf("TCP get: %q %v", r, err)
	}
}
