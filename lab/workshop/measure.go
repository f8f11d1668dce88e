package workshop

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/xdplab/xdplab/lab/bench"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/peer"
)

// Lesson 8's counters: where requests were served.
const (
	cTX   = 6
	cDrop = 7
	cPass = 8
)

// Lesson 8's checks.
const (
	CheckMeasureCount = "replies, silent sets and passed frames are counted in C_TX, C_DROP and C_PASS"
	CheckMeasureStore = "on a veth pair: your store serves a benchmark, every get a hit, from XDP"
	CheckMeasureMC    = "on the same pair: memcached serves the same benchmark (the numbers side by side)"
)

// mcPort is where memcached listens beside the store: a port XDP passes.
const mcPort = 11212

func init() {
	checks := []Check{
		{Name: CheckGetHit, Run: getHit},
		{Name: CheckSetStored, Run: setStored},
		{Name: CheckSetThenGet, Run: setThenGet},
		{Name: CheckSetLock, Run: setLock},
		{Name: CheckMeasureCount, Run: measureCount,
			Hint: "switch (act) { case XDP_TX: count(C_TX); break; ... } in xdp_prog, around serve()'s answer"},
		{Name: CheckMeasureStore, Run: measureStore},
		{Name: CheckMeasureMC, Run: measureMemcached},
	}
	register(&Lesson{N: 8, Slug: "measure", Title: "measure it against memcached", Program: "xdp_prog", Checks: checks})
}

func measureCount(e *Env) error {
	if err := e.ResetCounters("counters"); err != nil {
		return err
	}
	if err := e.storeItem(item{key: "m", value: "1"}); err != nil {
		return err
	}
	frames := [][]byte{
		Request(1, "get m\r\n").Frame(), Request(2, "get m\r\n").Frame(), Request(3, "get none\r\n").Frame(),
		Request(4, "set q 0 0 1 noreply\r\nx\r\n").Frame(),
		ARPFrame(), TCPFrame(),
	}
	for _, f := range frames {
		if _, _, err := e.Run(f); err != nil {
			return err
		}
	}
	var got [3]uint64
	for i, c := range []uint32{cTX, cDrop, cPass} {
		var err error
		if got[i], err = e.Counter("counters", c); err != nil {
			return err
		}
	}
	if got != [3]uint64{3, 1, 2} {
		return fmt.Errorf("after 3 gets (answered), a set with noreply and 2 frames that pass, C_TX, C_DROP and C_PASS are %d, %d, %d; want 3, 1, 2", got[0], got[1], got[2])
	}
	return nil
}

// workload is the benchmark both servers get: small enough for the
// store's 64-byte values, gets on preloaded keys, some sets.
func (e *Env) workload() bench.Workload {
	w := bench.DefaultWorkload()
	w.GetRatio, w.Keys, w.ValueSize, w.Sockets, w.InFlight = 0.9, 1000, 32, 2, 8
	w.Duration, w.Warmup = time.Second, 200*time.Millisecond
	w.Timeout = 2 * time.Second // an emulated guest answers slowly, yet answers
	if e.short {
		w.Duration, w.Warmup = 300*time.Millisecond, 50*time.Millisecond
	}
	return w
}

// benchmark runs the workload from the pair's client at the server's port.
func (e *Env) benchmark(name string, port uint16) (*bench.Result, error) {
	p, err := e.Pair()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	t := bench.Target{Name: name, Addr: p.ServerAddr(port).String(), Dial: p.client.Dial}
	r, err := bench.Run(ctx, t, e.workload())
	if err != nil {
		return nil, err
	}
	if r.Errors > 0 || r.PreloadFailed > 0 {
		return r, fmt.Errorf("%s: %d errors, %d keys not stored in the preload", name, r.Errors, r.PreloadFailed)
	}
	// A veth drops what its peer's queue has no room for: a little loss
	// is the pair's, not the server's.
	if r.Lost*20 > r.Requests {
		return r, fmt.Errorf("%s: %d of %d requests lost (over 5%%)", name, r.Lost, r.Requests+r.Lost)
	}
	return r, nil
}

func measureStore(e *Env) error {
	if err := e.ResetCounters("counters"); err != nil {
		return err
	}
	r, err := e.benchmark("your store", memcache.DefaultPort)
	if err != nil {
		return err
	}
	if r.Misses > 0 {
		return fmt.Errorf("%d of %d gets missed keys the preload stored", r.Misses, r.Hits+r.Misses)
	}
	tx, err := e.Counter("counters", cTX)
	if err != nil {
		return err
	}
	if tx < r.Requests {
		return fmt.Errorf("C_TX is %d after %d requests answered: the store must answer them in XDP", tx, r.Requests)
	}
	e.benched = r
	return nil
}

func measureMemcached(e *Env) error {
	p, err := e.Pair()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	mc, err := peer.StartMemcached(ctx, p.server, peer.MemcachedOptions{Port: mcPort, Threads: 1, Addrs: []netip.Addr{p.server.IPv4()}})
	if err != nil {
		return fmt.Errorf("starting memcached: %w", err)
	}
	defer mc.Stop()
	r, err := e.benchmark("memcached", mcPort)
	if err != nil {
		return err
	}
	table := bench.MarkdownTable(r)
	if e.benched != nil {
		table = bench.MarkdownTable(e.benched, r)
	}
	e.Note("%s", strings.TrimRight(table, "\n"))
	return nil
}
