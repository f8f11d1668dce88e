package bench

import (
	"fmt"
	"strings"
)

// MarkdownHeader is the header of the table MarkdownRow fills.
func MarkdownHeader() string {
	return "| target | via | workload | ops/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | hits | errors | lost/late | CPUs busy | CPU µs/req | client µs/req | rest µs/req | softirq µs/req | allocs/req |\n" +
		"|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
}

// MarkdownRow is one line of the table, with a trailing newline.
func (r *Result) MarkdownRow() string {
	l := r.Latency
	return fmt.Sprintf("| %s | %s | %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f%% | %d | %d/%d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
		r.Target, r.via(), r.Workload.String(), r.OpsPerSec, l.P50Us, l.P90Us, l.P99Us, l.P999Us, l.MaxUs,
		100*r.HitRatio(), r.Errors, r.Lost, r.Late, r.CPUBusy, r.CPUUsPerReq, r.ClientUsPerReq, r.ServerUsPerReq, r.SoftirqUsPerReq, r.AllocsPerReq)
}

// MarkdownTable is the header and a row per result.
func MarkdownTable(rs ...*Result) string {
	var b strings.Builder
	b.WriteString(MarkdownHeader())
	for _, r := range rs {
		b.WriteString(r.MarkdownRow())
	}
	return b.String()
}

// String is a compact description, e.g. "get 90% k16 v100 10000 keys 2×32 5s".
func (w Workload) String() string {
	s := fmt.Sprintf("get %.0f%%", 100*w.GetRatio)
	if w.MultiGet > 1 {
		s += fmt.Sprintf(" ×%d keys", w.MultiGet)
	}
	return s + fmt.Sprintf(" k%d v%d %d keys %d×%d %v", w.KeySize, w.ValueSize, w.Keys, w.Sockets, w.InFlight, w.Duration)
}

// via is the transport and, over UDP, the client engine: "udp/pinned".
func (r *Result) via() string {
	if r.Network == "udp" && r.Client != "" {
		return r.Network + "/" + r.Client
	}
	return r.Network
}
