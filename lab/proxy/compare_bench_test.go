package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/peer"
)

// Workload of the proxy comparison: gets of preloaded keys, from a fixed
// number of workers each with one request outstanding, over UDP to the
// XDP proxy and over TCP to nutcracker (which serves clients over TCP
// only). The same client code drives both; only the transport differs.
const (
	cmpKeys    = 1000
	cmpValue   = 100
	cmpWorkers = 16
)

// BenchmarkProxyVsNutcracker: client → XDP proxy → 3 memcached vs client
// → nutcracker → the same memcached, on veth pairs. Reports each one's
// requests per second and p99 latency (ns/op is wall time per request
// over all workers); the ratios are logged. Run it with
// -bench ProxyVsNutcracker -benchtime 100000x for stable numbers.
func BenchmarkProxyVsNutcracker(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	l := newProxyLab(b, backendKinds[0])
	proxyHost, client := l.topo.Host("proxy"), l.topo.Host("client")
	ncListen := netip.AddrPortFrom(l.listen.Addr(), 22121)
	var backends []string
	for _, h := range l.backends {
		backends = append(backends, netip.AddrPortFrom(h.IPv4(), DefaultPort).String())
	}
	nc, err := peer.StartNutcracker(b.Context(), proxyHost, ncListen, backends, peer.NutcrackerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Stop() })

	// Both proxies place keys alike (the ring is nutcracker's), so one
	// preload through the XDP proxy serves both.
	val := bytes.Repeat([]byte("v"), cmpValue)
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	for i := range cmpKeys {
		if err := l.client.Set(ctx, memcache.Item{Key: cmpKey(i), Value: val}); err != nil {
			b.Fatal(err)
		}
	}

	results := map[string][2]float64{}
	for _, tgt := range []struct {
		name string
		dial func() (net.Conn, error)
		udp  bool
	}{
		{"xdp-udp", func() (net.Conn, error) { return net.Dial("udp", l.listen.String()) }, true},
		{"nutcracker-tcp", func() (net.Conn, error) { return net.Dial("tcp", ncListen.String()) }, false},
	} {
		b.Run(tgt.name, func(b *testing.B) {
			conns := make([]net.Conn, cmpWorkers)
			for i := range conns {
				if err := client.Do(func() (err error) { conns[i], err = tgt.dial(); return err }); err != nil {
					b.Fatal(err)
				}
				defer conns[i].Close()
			}
			var next, lost atomic.Int64
			lat := make([][]time.Duration, cmpWorkers)
			errs := make(chan error, cmpWorkers)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w, c := range conns {
				wg.Go(func() {
					errs <- cmpWorker(c, tgt.udp, int64(b.N), &next, &lost, &lat[w])
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				b.Fatal("no request answered")
			}
			p99 := all[len(all)*99/100]
			rps := float64(len(all)) / elapsed.Seconds()
			b.ReportMetric(rps, "req/s")
			b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
			b.ReportMetric(float64(lost.Load()), "lost")
			results[tgt.name] = [2]float64{rps, float64(p99)}
		})
	}
	if x, n := results["xdp-udp"], results["nutcracker-tcp"]; x[0] > 0 && n[0] > 0 {
		b.Logf("XDP proxy / nutcracker: throughput ×%.2f, p99 latency ×%.2f", x[0]/n[0], x[1]/n[1])
	}
}

func cmpKey(i int) string { return fmt.Sprintf("cmp-key-%d", i) }

// cmpWorker sends gets one at a time until n have been claimed, recording
// each one's latency. A UDP request unanswered for 200ms counts as lost
// and is not retried.
func cmpWorker(c net.Conn, udp bool, n int64, next, lost *atomic.Int64, lat *[]time.Duration) error {
	var rd *bufio.Reader
	if !udp {
		rd = bufio.NewReaderSize(c, 64<<10)
	}
	buf := make([]byte, 64<<10)
	var id uint16
	for {
		i := next.Add(1) - 1
		if i >= n {
			return nil
		}
		key := cmpKey(int(i % cmpKeys))
		req := fmt.Appendf(nil, "get %s\r\n", key)
		t0 := time.Now()
		if udp {
			id++
			msg := memcache.AppendHeader(nil, memcache.Header{RequestID: id, Total: 1})
			if _, err := c.Write(append(msg, req...)); err != nil {
				return err
			}
			c.SetReadDeadline(t0.Add(200 * time.Millisecond))
			for {
				m, err := c.Read(buf)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					lost.Add(1)
					break
				}
				if err != nil {
					return err
				}
				if m < memcache.HeaderLen || binary.BigEndian.Uint16(buf) != id {
					continue // a late reply to a request counted lost
				}
				if !bytes.HasSuffix(buf[:m], []byte("END\r\n")) || !bytes.Contains(buf[:m], []byte(key+" ")) {
					return fmt.Errorf("get %s: reply %q", key, buf[:m])
				}
				*lat = append(*lat, time.Since(t0))
				break
			}
			continue
		}
		if _, err := c.Write(req); err != nil {
			return err
		}
		// The reply: a VALUE line, the value, END.
		var reply []byte
		for {
			line, err := rd.ReadSlice('\n')
			if err != nil {
				return fmt.Errorf("get %s: %w", key, err)
			}
			reply = append(reply, line...)
			if string(line) == "END\r\n" {
				break
			}
			if bytes.HasPrefix(line, []byte("VALUE ")) {
				data := make([]byte, cmpValue+2)
				if _, err := io.ReadFull(rd, data); err != nil {
					return err
				}
				reply = append(reply, data...)
				continue
			}
			return fmt.Errorf("get %s: reply %q", key, reply)
		}
		if !bytes.Contains(reply, []byte(key+" ")) {
			return fmt.Errorf("get %s: reply %q", key, reply)
		}
		*lat = append(*lat, time.Since(t0))
	}
}
