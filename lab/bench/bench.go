// Package bench is xdplab's load generator: a memcached client over UDP or
// TCP that drives a configurable GET/SET workload at any memcached-compatible
// server (the XDP store, memcached, a proxy) and measures throughput and
// latency.
//
// Each socket is a closed loop run by one goroutine: it keeps
// Workload.InFlight requests outstanding, sending the top-up in one
// sendmmsg (UDP) or one write of pipelined requests (TCP) and collecting
// replies with recvmmsg or large reads, so the client spends few syscalls
// per request (a Go client is usually the bottleneck against XDP). The same
// loop drives both transports, so a UDP server and a TCP one (nutcracker
// serves clients over TCP only) can be compared under one client.
// Latency is measured from the send batch to the receive batch of each
// request, so it includes the client's batching, as any closed-loop client's
// does.
//
// Results marshal to JSON and print as Markdown table rows.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
)

// Workload describes the load. Zero sizes, counts and durations take
// DefaultWorkload's values (so a value size of 0 means 100 bytes); a zero
// GetRatio means SETs only, and Warmup, Preload and Seed are taken as given.
type Workload struct {
	// GetRatio is the fraction of requests that are GETs (0..1); the rest
	// are SETs.
	GetRatio float64 `json:"get_ratio"`
	// Keys is the number of distinct keys; each request picks uniformly.
	Keys int `json:"keys"`
	// KeySize and ValueSize are in bytes; every key has exactly KeySize.
	KeySize   int `json:"key_size"`
	ValueSize int `json:"value_size"`
	// MultiGet is the number of keys per GET (1 if zero).
	MultiGet int `json:"multi_get"`
	// InFlight is the number of requests outstanding per socket.
	InFlight int `json:"in_flight"`
	// Sockets is the number of UDP sockets, each driven by its own goroutine.
	Sockets int `json:"sockets"`
	// Duration is how long the measured part runs; Warmup is load before
	// it that is not measured.
	Duration time.Duration `json:"duration_ns"`
	Warmup   time.Duration `json:"warmup_ns"`
	// Timeout: a request unanswered this long counts as lost and frees its
	// place in flight.
	Timeout time.Duration `json:"timeout_ns"`
	// Preload sets every key once before the run, so GETs hit.
	Preload bool `json:"preload"`
	// KeyPrefix starts every key (default "b:"), so runs against a shared
	// server can use their own key space.
	KeyPrefix string `json:"key_prefix"`
	// Seed makes the key sequence repeatable; sockets derive theirs from it.
	Seed uint64 `json:"seed"`
}

// DefaultWorkload is the workload of the project's store benchmarks: GETs
// on 16-byte keys with 100-byte values, 10,000 keys, 2 sockets with 32
// requests in flight each.
func DefaultWorkload() Workload {
	return Workload{
		GetRatio:  1,
		Keys:      10000,
		KeySize:   16,
		ValueSize: 100,
		MultiGet:  1,
		InFlight:  32,
		Sockets:   2,
		Duration:  5 * time.Second,
		Warmup:    500 * time.Millisecond,
		Timeout:   250 * time.Millisecond,
		Preload:   true,
		KeyPrefix: "b:",
		Seed:      1,
	}
}

func (w *Workload) normalize() error {
	d := DefaultWorkload()
	if w.Keys == 0 {
		w.Keys = d.Keys
	}
	if w.KeySize == 0 {
		w.KeySize = d.KeySize
	}
	if w.ValueSize == 0 {
		w.ValueSize = d.ValueSize
	}
	if w.MultiGet == 0 {
		w.MultiGet = 1
	}
	if w.InFlight == 0 {
		w.InFlight = d.InFlight
	}
	if w.Sockets == 0 {
		w.Sockets = d.Sockets
	}
	if w.Duration == 0 {
		w.Duration = d.Duration
	}
	if w.Timeout == 0 {
		w.Timeout = d.Timeout
	}
	if w.KeyPrefix == "" {
		w.KeyPrefix = d.KeyPrefix
	}
	switch {
	case w.GetRatio < 0 || w.GetRatio > 1:
		return fmt.Errorf("get ratio %v: want 0..1", w.GetRatio)
	case w.Keys < 1:
		return fmt.Errorf("keys %d: want at least 1", w.Keys)
	case w.KeySize > memcache.MaxKeyLen:
		return fmt.Errorf("key size %d: memcached takes at most %d bytes", w.KeySize, memcache.MaxKeyLen)
	case w.KeySize < len(w.KeyPrefix)+len(strconv.Itoa(w.Keys-1)):
		return fmt.Errorf("key size %d too small for %d keys with prefix %q", w.KeySize, w.Keys, w.KeyPrefix)
	case w.ValueSize < 0:
		return fmt.Errorf("value size %d: want at least 0", w.ValueSize)
	case w.MultiGet < 1 || w.MultiGet > 100:
		return fmt.Errorf("multi-get %d: want 1..100", w.MultiGet)
	case w.InFlight < 1 || w.InFlight > 4096:
		return fmt.Errorf("in flight %d: want 1..4096", w.InFlight)
	case w.Sockets < 1 || w.Sockets > 1024:
		return fmt.Errorf("sockets %d: want 1..1024", w.Sockets)
	case w.Duration < 0 || w.Warmup < 0 || w.Timeout < 0:
		return errors.New("durations must not be negative")
	}
	// memcached serves only requests that fit one datagram.
	if n := w.setLen(); (w.GetRatio < 1 || w.Preload) && n > memcache.MaxDatagram {
		return fmt.Errorf("a SET of a %d-byte value is a %d-byte datagram; memcached serves only one-datagram requests of at most %d bytes", w.ValueSize, n, memcache.MaxDatagram)
	}
	if n := w.getLen(); n > memcache.MaxDatagram {
		return fmt.Errorf("a GET of %d keys is a %d-byte datagram, over %d", w.MultiGet, n, memcache.MaxDatagram)
	}
	return nil
}

func (w *Workload) setLen() int {
	return memcache.HeaderLen + len("set  0 0 \r\n\r\n") + w.KeySize + len(strconv.Itoa(w.ValueSize)) + w.ValueSize
}

func (w *Workload) getLen() int {
	return memcache.HeaderLen + len("get\r\n") + w.MultiGet*(1+w.KeySize)
}

// Target is the server under load.
type Target struct {
	// Name labels results ("store", "memcached"); default Addr.
	Name string
	// Addr is the server's address, "host:port".
	Addr string
	// Network is "udp" (the default: memcached's UDP frames, each socket
	// with InFlight requests outstanding) or "tcp" (each connection with
	// InFlight requests pipelined, as nutcracker's clients do).
	Network string
	// Dial opens each socket; nil means net.Dial. Set it to open the
	// sockets in another network namespace.
	Dial func(network, addr string) (net.Conn, error)
	// Client is how the measured part drives UDP sockets: ClientPinned
	// (the default: pinned threads, fewer than CPUs, raw sendmmsg and
	// recvmmsg over buffers made once) or ClientNetpoll (a goroutine per
	// socket through Go's netpoller, the first client, kept to compare
	// with). Both send and check the same requests; TCP always uses the
	// netpoll loop.
	Client string
}

func (t Target) client() string {
	if t.network() == "tcp" {
		return ClientNetpoll
	}
	if t.Client == "" {
		return ClientPinned
	}
	return t.Client
}

func (t Target) network() string {
	if t.Network == "" {
		return "udp"
	}
	return t.Network
}

func (t Target) name() string {
	if t.Name != "" {
		return t.Name
	}
	return t.Addr
}

// Result is what one run measured.
type Result struct {
	Target  string `json:"target"`
	Addr    string `json:"addr"`
	Network string `json:"network"`
	// Client is the client engine that drove it (Target.Client).
	Client   string   `json:"client"`
	Workload Workload `json:"workload"`
	// Elapsed is the measured time, close to Workload.Duration.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Requests answered within the measured time, and of them GETs and SETs.
	Requests uint64 `json:"requests"`
	Gets     uint64 `json:"gets"`
	Sets     uint64 `json:"sets"`
	// Hits and Misses count keys of GETs (a multi-GET counts each key).
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// Errors are replies other than the expected kind (SET not STORED, a
	// GET reply that is not VALUE.../END, an error line, a value other
	// than the workload's, byte for byte, or for a key not asked for), or
	// send and receive errors such as ICMP port unreachable.
	Errors uint64 `json:"errors"`
	// Lost requests got no reply within Workload.Timeout.
	Lost uint64 `json:"lost"`
	// Late replies came after their request was counted lost (UDP only).
	Late uint64 `json:"late"`
	// OpsPerSec is Requests / Elapsed.
	OpsPerSec float64 `json:"ops_per_sec"`
	// CPUBusy is how many of the machine's CPUs were busy on average in
	// the measured time (client, kernel and servers alike), and
	// CPUUsPerReq what that cost per answered request; 0 where the machine
	// does not say (no /proc/stat).
	CPUBusy     float64 `json:"cpu_busy"`
	CPUUsPerReq float64 `json:"cpu_us_per_req"`
	// ClientUsPerReq is the CPU time of this process (the client, and any
	// server the process hosts, idle in the benchmarks' XDP runs) per
	// answered request, user and system, from getrusage: softirq work
	// done on the client's threads counts as theirs (XDP on a veth runs
	// there). ServerUsPerReq is the rest of the machine's busy time per
	// request: a server process, softirq elsewhere, other load. 0 where
	// not measured.
	ClientUsPerReq float64 `json:"client_us_per_req"`
	ServerUsPerReq float64 `json:"server_us_per_req"`
	// SoftirqUsPerReq is the machine's softirq time per answered request
	// (/proc/stat): the packet path, where an XDP server's work is
	// accounted where the kernel times softirqs apart; part of
	// CPUUsPerReq, and of the client's or the rest's.
	SoftirqUsPerReq float64 `json:"softirq_us_per_req"`
	// AllocsPerReq is the Go heap allocations of this process per
	// answered request in the measured time.
	AllocsPerReq float64 `json:"allocs_per_req"`
	// Latency is measured per request over the answered ones.
	Latency Latency `json:"latency"`
	// Preloaded keys, and how many of them were never stored.
	Preloaded     int `json:"preloaded"`
	PreloadFailed int `json:"preload_failed"`

	hist *Histogram
}

// Latency summarises a Histogram, in microseconds for readable JSON.
type Latency struct {
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P90Us  float64 `json:"p90_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// Histogram returns the latencies behind Latency.
func (r *Result) Histogram() *Histogram { return r.hist }

// HitRatio is Hits / (Hits+Misses), or 0 without GETs.
func (r *Result) HitRatio() float64 {
	if r.Hits+r.Misses == 0 {
		return 0
	}
	return float64(r.Hits) / float64(r.Hits+r.Misses)
}

// Run drives w at t and returns what it measured. It preloads first if
// w.Preload. It fails when the target never answered.
func Run(ctx context.Context, t Target, w Workload) (*Result, error) {
	if err := w.normalize(); err != nil {
		return nil, err
	}
	if n := t.network(); n != "udp" && n != "tcp" {
		return nil, fmt.Errorf("bench: network %q: want udp or tcp", n)
	}
	if c := t.client(); c != ClientPinned && c != ClientNetpoll {
		return nil, fmt.Errorf("bench: client %q: want %s or %s", c, ClientPinned, ClientNetpoll)
	}
	res := &Result{Target: t.name(), Addr: t.Addr, Network: t.network(), Client: t.client(), Workload: w, hist: new(Histogram)}
	conns, err := dialAll(t, w.Sockets)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	keys := newKeySet(w)
	if w.Preload {
		failed, err := preload(ctx, conns, keys, &w)
		if err != nil {
			return nil, err
		}
		res.Preloaded, res.PreloadFailed = w.Keys, failed
	}
	start := time.Now()
	ph := phases{base: start, measure: w.Warmup, end: w.Warmup + w.Duration}
	cpu := startCPUMeter(ph)
	if t.client() == ClientPinned {
		udp := make([]*udpConn, len(conns))
		srcs := make([]source, len(conns))
		for i, c := range conns {
			udp[i] = c.(*udpConn)
			l := newWorkload(&w, keys, w.Seed+uint64(i))
			l.measure, l.end = ph.measure, ph.end
			srcs[i] = l
		}
		if err := runPinned(ctx, udp, srcs, ph.base, ph.end, w.InFlight, w.Timeout); err != nil {
			return nil, err
		}
	} else {
		errc := make(chan error, len(conns))
		for i, c := range conns {
			go func() { errc <- run(ctx, c, &w, keys, ph, w.Seed+uint64(i)) }()
		}
		var errs []error
		for range conns {
			if err := <-errc; err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	for _, c := range conns {
		t := c.counts()
		t.st.addTo(res)
		res.hist.Merge(&t.hist)
	}
	res.Elapsed = w.Duration
	if ctx.Err() != nil {
		res.Elapsed = time.Since(start) - w.Warmup
		if res.Elapsed <= 0 {
			return nil, ctx.Err()
		}
	}
	res.OpsPerSec = float64(res.Requests) / res.Elapsed.Seconds()
	if ctx.Err() == nil {
		<-cpu.done
		if cpu.ok && res.Requests > 0 {
			res.CPUBusy = cpu.busy
			res.CPUUsPerReq = cpu.busy * res.Elapsed.Seconds() * 1e6 / float64(res.Requests)
			res.SoftirqUsPerReq = cpu.softirq * res.Elapsed.Seconds() * 1e6 / float64(res.Requests)
			if cpu.selfOK {
				res.ClientUsPerReq = cpu.self.Seconds() * 1e6 / float64(res.Requests)
				res.ServerUsPerReq = max(0, res.CPUUsPerReq-res.ClientUsPerReq)
			}
			res.AllocsPerReq = float64(cpu.allocs) / float64(res.Requests)
		}
	}
	h := res.hist
	res.Latency = Latency{MeanUs: us(h.Mean()), P50Us: us(h.Quantile(0.5)), P90Us: us(h.Quantile(0.9)),
		P99Us: us(h.Quantile(0.99)), P999Us: us(h.Quantile(0.999)), MaxUs: us(h.Max())}
	if res.Requests == 0 {
		return res, fmt.Errorf("bench: no replies from %s in %v (%d errors, %d lost): is a memcached %s server there?", t.Addr, w.Duration, res.Errors, res.Lost, strings.ToUpper(t.network()))
	}
	return res, nil
}

func dialAll(t Target, n int) ([]socket, error) {
	dial := t.Dial
	if dial == nil {
		dial = net.Dial
	}
	network := t.network()
	var conns []socket
	fail := func(err error) ([]socket, error) {
		for _, c := range conns {
			c.close()
		}
		return nil, err
	}
	for range n {
		nc, err := dial(network, t.Addr)
		if err != nil {
			return fail(fmt.Errorf("bench: dial %s %s: %w", network, t.Addr, err))
		}
		var c socket
		if network == "tcp" {
			c, err = newTCPConn(nc, func() (net.Conn, error) { return dial(network, t.Addr) })
		} else {
			c, err = newUDPConn(nc)
		}
		if err != nil {
			nc.Close()
			return fail(err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// preload stores every key once, spreading the keys over the sockets, and
// retries lost ones twice. It returns how many keys were never stored.
func preload(ctx context.Context, conns []socket, keys *keySet, w *Workload) (int, error) {
	failed := make(chan int, len(conns))
	errc := make(chan error, len(conns))
	for i, c := range conns {
		var todo []int
		for k := i; k < w.Keys; k += len(conns) {
			todo = append(todo, k)
		}
		go func() {
			n, err := preloadOn(ctx, c, w, keys, todo)
			failed <- n
			errc <- err
		}()
	}
	total := 0
	var errs []error
	for range conns {
		total += <-failed
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return total, err
	}
	if total == w.Keys {
		return total, fmt.Errorf("bench: preload stored none of %d keys: is a memcached server there?", w.Keys)
	}
	return total, nil
}

// keySet holds every key, built once so requests are cheap to assemble.
type keySet struct {
	size int
	buf  []byte
}

func newKeySet(w Workload) *keySet {
	ks := &keySet{size: w.KeySize, buf: make([]byte, 0, w.Keys*w.KeySize)}
	for i := range w.Keys {
		n := strconv.Itoa(i)
		ks.buf = append(ks.buf, w.KeyPrefix...)
		for range w.KeySize - len(w.KeyPrefix) - len(n) {
			ks.buf = append(ks.buf, '0')
		}
		ks.buf = append(ks.buf, n...)
	}
	return ks
}

func (ks *keySet) key(i int) []byte { return ks.buf[i*ks.size : (i+1)*ks.size] }
