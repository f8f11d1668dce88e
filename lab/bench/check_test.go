package bench

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
)

func TestCheckGet(t *testing.T) {
	w := Workload{Keys: 10, KeySize: 4, KeyPrefix: "k"}
	ks := newKeySet(w)
	v := Value(5)
	hit := func(k string) string { return "VALUE " + k + " 0 5\r\n" + string(v) + "\r\n" }
	asked := []int{1, 2, 3}
	at := func(j int) int { return asked[j] }
	for _, c := range []struct {
		reply string
		hits  int
		ok    bool
	}{
		{"END\r\n", 0, true},
		{hit("k001") + "END\r\n", 1, true},
		{hit("k001") + hit("k003") + "END\r\n", 2, true},
		{hit("k003") + hit("k001") + "END\r\n", 1, false},                         // out of order
		{hit("k004") + "END\r\n", 0, false},                                       // not asked
		{strings.Replace(hit("k001"), "abcde", "abcdf", 1) + "END\r\n", 0, false}, // a byte off
		{"VALUE k001 1 5\r\nabcde\r\nEND\r\n", 0, false},                          // flags
		{"VALUE k001 0 4\r\nabcd\r\nEND\r\n", 0, false},                           // length
		{hit("k001") + "END\r\nx", 1, false},
		{hit("k001"), 1, false},
		{"VALUE k001 0 5\r\nabcdeXXEND\r\n", 0, false},
		{"ERROR\r\n", 0, false},
	} {
		n, ok := checkGet([]byte(c.reply), ks, at, len(asked), v)
		if n != c.hits || ok != c.ok {
			t.Errorf("%q: %d hits, ok %v; want %d, %v", c.reply, n, ok, c.hits, c.ok)
		}
	}
}

// TestClientCounting: against a server that answers some GETs with a value
// a byte off, some twice, and some too late, both engines count exactly
// those as errors and late, and the rest as hits.
func TestClientCounting(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	w := Workload{GetRatio: 1, Keys: 10, KeySize: 16, ValueSize: 20, InFlight: 4, Sockets: 1,
		Duration: 400 * time.Millisecond, Timeout: 50 * time.Millisecond}
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := string(buf[memcache.HeaderLen:k])
			key := strings.TrimSuffix(strings.TrimPrefix(req, "get "), "\r\n")
			val := Value(w.ValueSize)
			n++
			if n%10 == 3 {
				val[7]++
			}
			out := append(append([]byte{}, buf[:memcache.HeaderLen]...), "VALUE "+key+" 0 20\r\n"+string(val)+"\r\nEND\r\n"...)
			if n%10 == 5 {
				time.AfterFunc(2*w.Timeout, func() { pc.WriteTo(out, from) })
				continue
			}
			pc.WriteTo(out, from)
			if n%10 == 7 {
				pc.WriteTo(out, from)
			}
		}
	}()
	for _, c := range []string{ClientPinned, ClientPinned + " without GSO", ClientNetpoll} {
		noGSO = strings.HasSuffix(c, "without GSO")
		r, err := Run(t.Context(), Target{Addr: pc.LocalAddr().String(), Client: strings.Fields(c)[0]}, w)
		noGSO = false
		if err != nil {
			t.Fatal(err)
		}
		// Every 10th: one error, one late duplicate; one lost and late.
		if r.Errors == 0 || r.Lost == 0 || r.Late == 0 || r.Hits != r.Gets-r.Errors {
			t.Errorf("%s: %d requests, %d hits, %d errors, %d lost, %d late", c, r.Requests, r.Hits, r.Errors, r.Lost, r.Late)
		}
		if d := float64(r.Errors) / float64(r.Requests); d < 0.05 || d > 0.2 {
			t.Errorf("%s: %d errors in %d requests, want about 1 in 9", c, r.Errors, r.Requests)
		}
	}
}
