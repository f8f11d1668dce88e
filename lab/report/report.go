// Package report is the kernel matrix's report: what ran on each kernel and
// how it went. One report is written as JSON (for tools), Markdown (for
// people and CI job summaries) and JUnit XML (for test-report UIs). A run
// sharded as CI shards it (one process per kernel) writes one report per
// kernel; Merge joins them into the report a whole local run writes.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/verifier"
)

// The files a report directory holds.
const (
	JSONFile     = "report.json"
	MarkdownFile = "report.md"
	JUnitFile    = "junit.xml"
)

// GuestLogFile names the file holding a kernel's full guest kernel log.
func GuestLogFile(kernel string) string { return "guest-" + kernel + ".log" }

// Case is one test case's outcome on one kernel.
type Case struct {
	Kernel  string  `json:"kernel"`
	Suite   string  `json:"suite"`
	Case    string  `json:"case"`
	Action  string  `json:"action"` // pass, fail, skip
	Seconds float64 `json:"seconds"`
	// Output is kept for failures and skips (the reason), not for passes.
	Output string `json:"output,omitempty"`
}

// Kernel is one kernel's run: the boot, every case, and what the suites
// measured (raw JSON as the suites wrote it).
type Kernel struct {
	Kernel   string          `json:"kernel"`
	Release  string          `json:"release"`
	Accel    string          `json:"accel"`
	Backend  string          `json:"backend,omitempty"`
	Seconds  float64         `json:"seconds"`
	Error    string          `json:"error,omitempty"` // the VM failed (crash, hang, panic): the guest log tail
	Cases    []Case          `json:"cases"`
	Verifier json.RawMessage `json:"verifier,omitempty"`
	// Limits are what the verifier limit probes found (ReadLimits).
	Limits []verifier.Limit `json:"limits,omitempty"`
	// Features are the kernel features the shipped programs call on or
	// pick a code path by, as probed there (ReadFeatures).
	Features []verifier.Feature `json:"features,omitempty"`
	// Room is how far an XDP reply could grow on a veth there, and the
	// largest value the store answered in XDP (ReadRoom).
	Room []verifier.Limit `json:"room,omitempty"`
	// Throughput and ProxyThroughput are the throughput suites' results.
	Throughput      json.RawMessage `json:"throughput,omitempty"`
	ProxyThroughput json.RawMessage `json:"proxy_throughput,omitempty"`
}

// ID names the run in a report: the kernel, and the backend when it is not
// the default one, since CI runs one kernel through both.
func (k *Kernel) ID() string {
	if k.Backend == "" || k.Backend == "direct" {
		return k.Kernel
	}
	return k.Kernel + " (" + k.Backend + ")"
}

// Command is the local command that reproduces the run.
func (k *Kernel) Command() string {
	c := "go test -timeout 30m ./tests -kernels " + k.Kernel
	if k.Backend != "" && k.Backend != "direct" {
		c += " -backend " + k.Backend
	}
	return c
}

// Counts tallies the kernel's cases by action.
func (k *Kernel) Counts() (pass, fail, skip int) {
	for _, c := range k.Cases {
		switch c.Action {
		case "pass":
			pass++
		case "skip":
			skip++
		default:
			fail++
		}
	}
	return
}

// Failed says why the kernel's run failed, or "" when it passed. A run in
// which nothing ran did not pass.
func (k *Kernel) Failed() string {
	_, fail, _ := k.Counts()
	switch {
	case k.Error != "":
		return firstLine(k.Error)
	case fail > 0:
		return fmt.Sprintf("%d failed", fail)
	case len(k.Cases) == 0:
		return "no test ran"
	}
	return ""
}

// Report is a whole run (or a merge of runs).
type Report struct {
	Time    string    `json:"time"`
	Kernels []*Kernel `json:"kernels"`
}

// New starts a report stamped now.
func New() *Report { return &Report{Time: time.Now().UTC().Format(time.RFC3339)} }

func (r *Report) sort() {
	sort.Slice(r.Kernels, func(i, j int) bool {
		a, b := r.Kernels[i], r.Kernels[j]
		if a.Kernel != b.Kernel {
			return a.Kernel < b.Kernel
		}
		return a.Backend < b.Backend
	})
}

// Failures lists "KERNEL: why" for every kernel whose run failed.
func (r *Report) Failures() []string {
	var f []string
	for _, k := range r.Kernels {
		if why := k.Failed(); why != "" {
			f = append(f, k.ID()+": "+why)
		}
	}
	return f
}

// Write puts report.json, report.md and junit.xml into dir.
func (r *Report) Write(dir string) error {
	r.sort()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	ju, err := r.JUnit()
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{JSONFile: append(js, '\n'), MarkdownFile: []byte(r.Markdown()), JUnitFile: ju} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Read loads the report.json of dir.
func Read(dir string) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, JSONFile))
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, JSONFile), err)
	}
	return &r, nil
}

// Merge joins reports of disjoint runs (CI's shards) into one, stamped with
// the latest of their times. A run (kernel and backend) in two reports is an
// error: one of them would be silently lost.
func Merge(rs ...*Report) (*Report, error) {
	m := &Report{}
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Time > m.Time {
			m.Time = r.Time
		}
		for _, k := range r.Kernels {
			if seen[k.ID()] {
				return nil, fmt.Errorf("kernel %s is in more than one report", k.ID())
			}
			seen[k.ID()] = true
			m.Kernels = append(m.Kernels, k)
		}
	}
	if len(m.Kernels) == 0 {
		return nil, errors.New("no kernel in any report")
	}
	m.sort()
	return m, nil
}

// Missing lists the kernels of want that the report lacks.
func (r *Report) Missing(want []string) []string {
	have := map[string]bool{}
	for _, k := range r.Kernels {
		have[k.Kernel] = true
	}
	var miss []string
	for _, w := range want {
		if !have[w] {
			miss = append(miss, w)
		}
	}
	return miss
}

// Markdown is the table a run prints, then failures and skips with their
// reasons, then how to reproduce each kernel's run.
func (r *Report) Markdown() string {
	r.sort()
	var md strings.Builder
	md.WriteString("| kernel | release | accel | boot+run s | pass | fail | skip | kv_xdp insns verified | proxy_xdp insns verified | GET ops/s store / memcached | GET ops/s store / reflector | GET ops/s XDP proxy / nutcracker, memcached backends | same, XDP-store backends |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, k := range r.Kernels {
		pass, fail, skip := k.Counts()
		accel := k.Accel
		if k.Backend != "" {
			accel += ", " + k.Backend
		}
		fmt.Fprintf(&md, "| %s | %s | %s | %.0f | %d | %d | %d | %s | %s | %s | %s | %s | %s |\n", k.ID(), k.Release, accel, k.Seconds, pass, fail, skip,
			verifiedInsns(k.Verifier, "kv_xdp"), verifiedInsns(k.Verifier, "proxy_xdp"),
			getThroughput(k.Throughput, "store", "memcached"),
			getThroughput(k.Throughput, "store", "reflector"),
			getThroughput(k.ProxyThroughput, "xdp-proxy→memcached", "nutcracker→memcached"),
			getThroughput(k.ProxyThroughput, "xdp-proxy→kv", "nutcracker→kv"))
	}
	if v := r.throughputTable(); v != "" {
		md.WriteString("\nStore throughput, per kernel (GETs, veth pairs, medians of the rounds; the reflector answers every GET with a store hit's bytes and keeps no state: the ceiling; netpoll: the first client; CPU: the whole machine's, and this process's, per request; goals store ÷ memcached ≥ 4×, store ÷ reflector ≥ 90%, reported, not asserted):\n\n" + v)
	}
	if v := r.verifierTable(); v != "" {
		md.WriteString("\nVerifier, per program and kernel (headroom: of the 1M-instruction limit):\n\n" + v)
	}
	if v := r.limitsTable(); v != "" {
		md.WriteString("\nVerifier limits, per kernel (found by search with each kernel's verifier; ≥: nothing was refused as far as the search went):\n\n" + v)
	}
	if v := r.roomTable(); v != "" {
		md.WriteString("\nXDP reply room on a veth, per kernel (measured on a veth pair: the bytes bpf_xdp_adjust_head and bpf_xdp_adjust_tail would add to a GET request; the largest value the store answered in XDP):\n\n" + v)
	}
	if v := r.featuresTable(); v != "" {
		md.WriteString("\nKernel features the programs use, probed per kernel (→ the code path taken):\n\n" + v)
	}
	md.WriteString("\nFailures and skips:\n\n")
	none := true
	for _, k := range r.Kernels {
		if k.Error != "" {
			fmt.Fprintf(&md, "- %s: %s\n", k.ID(), firstLine(k.Error))
			none = false
		}
		for _, c := range k.Cases {
			if c.Action != "pass" {
				fmt.Fprintf(&md, "- %s/%s/%s: %s", k.ID(), c.Suite, c.Case, c.Action)
				if why := c.reason(); why != "" {
					fmt.Fprintf(&md, ": %s", why)
				}
				md.WriteString("\n")
				none = false
			}
		}
	}
	if none {
		md.WriteString("- none\n")
	}
	md.WriteString("\nReproduce one kernel's run locally (as root):\n\n")
	for _, k := range r.Kernels {
		fmt.Fprintf(&md, "- %s: `%s`\n", k.ID(), k.Command())
	}
	return md.String()
}

// verifierTable is the runs' verifier statistics as the ledger shows them.
func (r *Report) verifierTable() string {
	l := &verifier.Ledger{}
	for _, k := range r.Kernels {
		var st []bpfload.ProgramStats
		if json.Unmarshal(k.Verifier, &st) == nil {
			l.Update(k.ID(), k.Release, st)
		}
	}
	if len(l.Rows) == 0 {
		return ""
	}
	return l.Table(nil)
}

// limitsTable is the runs' verifier limits, a row per limit.
func (r *Report) limitsTable() string {
	return verifier.LimitsTable(perKernel(r, func(k *Kernel) []verifier.Limit { return k.Limits }))
}

// roomTable is the runs' XDP room measurements, a row per measure.
func (r *Report) roomTable() string {
	runs, ids := perKernel(r, func(k *Kernel) []verifier.Limit { return k.Room })
	return verifier.FactsTable("measure", runs, ids)
}

// featuresTable is the runs' feature probes, a row per feature.
func (r *Report) featuresTable() string {
	return verifier.FeaturesTable(perKernel(r, func(k *Kernel) []verifier.Feature { return k.Features }))
}

// perKernel maps each run that has some of what get returns to it, and
// lists those runs in order.
func perKernel[T any](r *Report, get func(*Kernel) []T) (map[string][]T, []string) {
	runs := map[string][]T{}
	var ids []string
	for _, k := range r.Kernels {
		if v := get(k); len(v) > 0 {
			runs[k.ID()] = v
			ids = append(ids, k.ID())
		}
	}
	return runs, ids
}

// LimitsFilePattern and FeaturesFilePattern match the files the limit
// probes and feature probes write into a results directory
// (testutils.RecordLimits, RecordFeatures).
const (
	LimitsFilePattern   = "limits-*.json"
	FeaturesFilePattern = "features-*.json"
	RoomFilePattern     = "room-*.json"
)

// ReadRoom collects every XDP room file in a results directory
// (testutils.RecordRoom), in file name order.
func ReadRoom(dir string) ([]verifier.Limit, error) {
	return readAll[verifier.Limit](dir, RoomFilePattern)
}

// ReadLimits collects every limits file in a results directory, in file
// name order.
func ReadLimits(dir string) ([]verifier.Limit, error) {
	return readAll[verifier.Limit](dir, LimitsFilePattern)
}

// ReadVerifier collects the verifier statistics every package's verifier
// test wrote into a results directory (testutils.RecordVerifierStats).
func ReadVerifier(dir string) ([]bpfload.ProgramStats, error) {
	return readAll[bpfload.ProgramStats](dir, "verifier-*.json")
}

// ReadFeatures collects every features file in a results directory.
func ReadFeatures(dir string) ([]verifier.Feature, error) {
	return readAll[verifier.Feature](dir, FeaturesFilePattern)
}

// readAll concatenates the JSON lists in dir's files matching pattern.
func readAll[T any](dir, pattern string) ([]T, error) {
	files, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return nil, err
	}
	var all []T
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var ls []T
		if err := json.Unmarshal(b, &ls); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		all = append(all, ls...)
	}
	return all, nil
}

// reason says why a case did not pass, from its output: for a failure the
// first message (the first thing that went wrong), for a skip the last
// (t.Skip ends the test, so what came before it is log).
func (c Case) reason() string {
	lines := strings.Split(c.Output, "\n")
	if c.Action == "skip" {
		for i := len(lines) - 1; i >= 0; i-- {
			if l := strings.TrimSpace(lines[i]); testMessageRE.MatchString(l) {
				return clip(l)
			}
		}
	}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- ") {
			continue
		}
		return clip(l)
	}
	return ""
}

// testMessageRE is the start of a message go test prints: "x_test.go:9: ".
var testMessageRE = regexp.MustCompile(`^[\w.-]+\.go:\d+: `)

func clip(l string) string {
	if len(l) > 160 {
		l = l[:160] + "…"
	}
	return l
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// verifiedInsns is the most instructions the verifier walked for program
// (of its variants), or "-".
func verifiedInsns(raw json.RawMessage, program string) string {
	var st []struct {
		Program string `json:"program"`
		Insns   uint32 `json:"verified_insns"`
	}
	if json.Unmarshal(raw, &st) != nil {
		return "-"
	}
	max := uint32(0)
	for _, s := range st {
		if s.Program == program && s.Insns > max {
			max = s.Insns
		}
	}
	if max == 0 {
		return "-"
	}
	return fmt.Sprint(max)
}

// getResult is one result of a throughput suite's JSON, what the report
// reads of it.
type getResult struct {
	Target   string  `json:"target"`
	Client   string  `json:"client"`
	Ops      float64 `json:"ops_per_sec"`
	CPU      float64 `json:"cpu_us_per_req"`
	ClientUs float64 `json:"client_us_per_req"`
	Latency  struct {
		P99 float64 `json:"p99_us"`
	} `json:"latency"`
	Workload struct {
		GetRatio float64 `json:"get_ratio"`
	} `json:"workload"`
}

// getMedians is each target's GET-only results of a throughput suite's
// JSON, as medians over its rounds (of an even count, the mean of the
// middle two), in the order the targets first appear; nil when raw says
// nothing.
func getMedians(raw json.RawMessage) ([]string, map[string]getResult) {
	var rs []getResult
	if json.Unmarshal(raw, &rs) != nil {
		return nil, nil
	}
	var order []string
	all := map[string][]getResult{}
	for _, r := range rs {
		if r.Workload.GetRatio != 1 {
			continue
		}
		if _, ok := all[r.Target]; !ok {
			order = append(order, r.Target)
		}
		all[r.Target] = append(all[r.Target], r)
	}
	med := map[string]getResult{}
	for t, rs := range all {
		m := func(f func(getResult) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
		}
		g := getResult{Target: t, Client: rs[0].Client}
		g.Ops = m(func(r getResult) float64 { return r.Ops })
		g.CPU = m(func(r getResult) float64 { return r.CPU })
		g.ClientUs = m(func(r getResult) float64 { return r.ClientUs })
		g.Latency.P99 = m(func(r getResult) float64 { return r.Latency.P99 })
		med[t] = g
	}
	return order, med
}

// getThroughput summarises a GET-only comparison of a throughput suite:
// target a's ops/s against b's (medians over rounds).
func getThroughput(raw json.RawMessage, a, b string) string {
	_, med := getMedians(raw)
	if med[a].Ops == 0 || med[b].Ops == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f / %.0f = %.2f×", med[a].Ops, med[b].Ops, med[a].Ops/med[b].Ops)
}

// throughputTable is the store suite's GET targets per kernel: rate, p99,
// CPU per request, and the ratios to memcached and the reflector.
func (r *Report) throughputTable() string {
	var b strings.Builder
	for _, k := range r.Kernels {
		order, med := getMedians(k.Throughput)
		ratio := func(t, base string) string {
			if med[base].Ops == 0 || med[t].Ops == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f×", med[t].Ops/med[base].Ops)
		}
		for _, t := range order {
			g := med[t]
			fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.1f | %.2f | %.2f | %s | %s |\n", k.ID(), t, g.Client, g.Ops, g.Latency.P99, g.CPU, g.ClientUs,
				ratio(t, "memcached"), ratio(t, "reflector"))
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "| kernel | target | client | GETs/s | p99 µs | CPU µs/req | client µs/req | ÷ memcached | ÷ reflector |\n|---|---|---|--:|--:|--:|--:|--:|--:|\n" + b.String()
}
