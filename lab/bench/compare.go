package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Comparison is several targets driven by one workload in alternating
// rounds within one run, so that load from elsewhere on a shared machine
// hits all of them alike; medians over rounds are what it quotes.
type Comparison struct {
	Workload Workload
	// Baseline names the target the others' ratios are against.
	Baseline string
	Targets  []string
	// Results holds every round's result per target name.
	Results map[string][]*Result
}

// Compare runs every target once per round, reversing the order on odd
// rounds so that none always goes first. Keys are preloaded in the first
// round only (when w.Preload), through each target.
func Compare(ctx context.Context, targets []Target, w Workload, rounds int, baseline string) (*Comparison, error) {
	c := &Comparison{Workload: w, Baseline: baseline, Results: map[string][]*Result{}}
	for _, t := range targets {
		c.Targets = append(c.Targets, t.name())
	}
	if !slices.Contains(c.Targets, baseline) {
		return nil, fmt.Errorf("bench: baseline %q is not a target", baseline)
	}
	preload := w.Preload
	for r := range rounds {
		order := slices.Clone(targets)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			w.Preload = preload && r == 0
			res, err := Run(ctx, t, w)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", r+1, t.name(), err)
			}
			c.Results[res.Target] = append(c.Results[res.Target], res)
		}
	}
	return c, nil
}

// Median of f over target's rounds (of an even count, the mean of the
// middle two).
func (c *Comparison) Median(target string, f func(*Result) float64) float64 {
	var v []float64
	for _, r := range c.Results[target] {
		v = append(v, f(r))
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
}

// Ops, P50, P99 and CPU are the usual arguments of Median.
func Ops(r *Result) float64 { return r.OpsPerSec }
func P50(r *Result) float64 { return r.Latency.P50Us }
func P99(r *Result) float64 { return r.Latency.P99Us }
func CPU(r *Result) float64 { return r.CPUUsPerReq }

// ClientCPU and RestCPU split CPU: this process's share and the rest;
// SoftirqCPU is the packet path's share, wherever it ran.
func ClientCPU(r *Result) float64  { return r.ClientUsPerReq }
func RestCPU(r *Result) float64    { return r.ServerUsPerReq }
func SoftirqCPU(r *Result) float64 { return r.SoftirqUsPerReq }

// All is every result, round by round, for JSON.
func (c *Comparison) All() []*Result {
	var all []*Result
	for i := 0; ; i++ {
		n := 0
		for _, t := range c.Targets {
			if rs := c.Results[t]; i < len(rs) {
				all, n = append(all, rs[i]), n+1
			}
		}
		if n == 0 {
			return all
		}
	}
}

// Markdown is a row per round and target, then the medians with each
// target's throughput and p99 latency as ratios of the baseline's.
func (c *Comparison) Markdown() string {
	var b strings.Builder
	b.WriteString(MarkdownHeader())
	for _, r := range c.All() {
		row := *r
		row.Target = fmt.Sprintf("%s (round %d)", r.Target, slices.Index(c.Results[r.Target], r)+1)
		b.WriteString(row.MarkdownRow())
	}
	rounds := len(c.Results[c.Baseline])
	fmt.Fprintf(&b, "\n| median of %d rounds | via | ops/s | p50 µs | p99 µs | CPU µs/req | client µs/req | rest µs/req | softirq µs/req | ops/s vs %s | p99 vs %s | CPU/req vs %s |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
		rounds, c.Baseline, c.Baseline, c.Baseline)
	for _, t := range c.Targets {
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f× | %.2f× | %.2f× |\n", t, c.Results[t][0].via(),
			c.Median(t, Ops), c.Median(t, P50), c.Median(t, P99), c.Median(t, CPU), c.Median(t, ClientCPU), c.Median(t, RestCPU), c.Median(t, SoftirqCPU),
			c.Ratio(t, Ops), c.Ratio(t, P99), c.Ratio(t, CPU))
	}
	return b.String()
}

// Ratio is target's median of f over the baseline's.
func (c *Comparison) Ratio(target string, f func(*Result) float64) float64 {
	base := c.Median(c.Baseline, f)
	if base == 0 {
		return 0
	}
	return c.Median(target, f) / base
}

// WriteJSON writes results to path, as a JSON array.
func WriteJSON(path string, results []*Result) error {
	js, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, js, 0o644)
}

// Knobs are the environment variables that tune the project's comparison
// benchmarks (go test -bench cannot take flags of its own):
//
//	XDPLAB_BENCH_ROUNDS=3     rounds per workload
//	XDPLAB_BENCH_ROUND=2s     measured time per target and round
//	XDPLAB_BENCH_JSON=FILE    also write every result as JSON
//	XDPLAB_BENCH_VALUE=100    value size in bytes
//	XDPLAB_BENCH_SOCKETS=2    client sockets
//	XDPLAB_BENCH_INFLIGHT=32  requests in flight per socket
//	XDPLAB_BENCH_THREADS=1    the pinned client's threads (default: CPUs − 1)
type Knobs struct {
	Rounds int
	Round  time.Duration
	JSON   string
}

// ReadKnobs overrides k and w with what the environment sets; w's Duration
// becomes the round and its warm-up a quarter of it.
func ReadKnobs(k *Knobs, w *Workload) error {
	ints := []struct {
		name string
		v    *int
	}{{"XDPLAB_BENCH_ROUNDS", &k.Rounds}, {"XDPLAB_BENCH_VALUE", &w.ValueSize}, {"XDPLAB_BENCH_SOCKETS", &w.Sockets}, {"XDPLAB_BENCH_INFLIGHT", &w.InFlight}}
	for _, e := range ints {
		if s := os.Getenv(e.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				return fmt.Errorf("%s=%q: want a positive number", e.name, s)
			}
			*e.v = n
		}
	}
	if s := os.Getenv("XDPLAB_BENCH_ROUND"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("XDPLAB_BENCH_ROUND=%q: want a duration such as 2s", s)
		}
		k.Round = d
	}
	k.JSON = os.Getenv("XDPLAB_BENCH_JSON")
	w.Duration, w.Warmup = k.Round, k.Round/4
	return nil
}

// Goals is the project's two throughput goals for the store (issue 13), as
// measured in this comparison: its GETs/s over memcached's (goal ≥ 4×) and
// over the reflector's, the ceiling the client and the path allow (goal ≥
// 90%), with each one's median p99 and CPU per request beside. Targets the
// comparison lacks are left out. Reported, never asserted.
func (c *Comparison) Goals(store, memcached, reflector string) string {
	var b strings.Builder
	row := func(t string) string {
		return fmt.Sprintf("%s %.0f/s, p99 %.1f µs, %.2f CPU µs/req", t, c.Median(t, Ops), c.Median(t, P99), c.Median(t, CPU))
	}
	ratio := func(a, b string) float64 {
		if d := c.Median(b, Ops); d > 0 {
			return c.Median(a, Ops) / d
		}
		return 0
	}
	if len(c.Results[store]) == 0 {
		return ""
	}
	if len(c.Results[memcached]) > 0 {
		r := ratio(store, memcached)
		fmt.Fprintf(&b, "goal store ÷ memcached ≥ 4×: %.2f× %s (%s; %s)\n", r, met(r >= 4), row(store), row(memcached))
	}
	if len(c.Results[reflector]) > 0 {
		r := ratio(store, reflector)
		fmt.Fprintf(&b, "goal store ÷ reflector ≥ 90%%: %.0f%% %s (%s; %s)\n", 100*r, met(r >= 0.9), row(store), row(reflector))
	}
	return b.String()
}

func met(ok bool) string {
	if ok {
		return "(met)"
	}
	return "(missed)"
}
