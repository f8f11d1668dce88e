// Package verifier keeps the verifier ledger: what the verifier did with
// each shipped program, per load configuration and kernel, committed in
// tests/ledger.json. The kernel matrix compares every run with it and fails
// when a program grows past a tolerance on any kernel, or when its headroom
// to the verifier's instruction limit falls under a floor, so "does it still
// load on 5.10?" is answered before a release, not after. Refreshing the
// ledger is a deliberate command (lab verifier update) that prints the diff.
package verifier

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/xdplab/xdplab/kernels"
	"github.com/xdplab/xdplab/lab/bpfload"
)

// InsnLimit is BPF_COMPLEXITY_LIMIT_INSNS, the most instructions the
// verifier walks for one program (since 5.2, so on every pinned kernel).
const InsnLimit = 1_000_000

// Row is one program in one configuration on one kernel.
type Row struct {
	Kernel  string `json:"kernel"`
	Release string `json:"release"`
	bpfload.ProgramStats
}

func (r Row) key() string { return r.Kernel + "\x00" + r.Program + "\x00" + r.Config }

// Name says which program and configuration the row is.
func (r Row) Name() string {
	if r.Config == "" {
		return r.Program
	}
	return r.Program + " (" + r.Config + ")"
}

// Headroom is the share of InsnLimit the row leaves unused.
func (r Row) Headroom() float64 { return 1 - float64(r.VerifiedInsn)/InsnLimit }

// Ledger is the committed file.
type Ledger struct {
	Comment string `json:"comment,omitempty"`
	// Tolerance is how much a program may grow (instructions verified,
	// states) over its row before the suite fails: 0.10 is 10%.
	Tolerance float64 `json:"tolerance"`
	// MinHeadroom is the share of InsnLimit every program must leave
	// unused on every kernel: 0.5 is half of it.
	MinHeadroom float64 `json:"min_headroom"`
	Rows        []Row   `json:"rows"`
	// Kernels are what each kernel's build offered the programs: the
	// features they use and the verifier's limits, so that re-pinning a
	// kernel shows what its new build changes (lab verifier diff).
	Kernels []Facts `json:"kernels,omitempty"`
}

// Facts are one kernel build's feature probes and limit probes.
type Facts struct {
	Kernel   string    `json:"kernel"`
	Release  string    `json:"release"`
	Features []Feature `json:"features,omitempty"`
	Limits   []Limit   `json:"limits,omitempty"`
}

// Load reads a ledger file.
func Load(path string) (*Ledger, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var l Ledger
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if l.Tolerance <= 0 || l.MinHeadroom <= 0 {
		return nil, fmt.Errorf("%s: tolerance and min_headroom must be set", path)
	}
	return &l, nil
}

// Save writes the ledger, rows in a stable order so diffs read well.
func (l *Ledger) Save(path string) error {
	sort.Slice(l.Rows, func(i, j int) bool { return l.Rows[i].key() < l.Rows[j].key() })
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// rows are the ledger's rows for a kernel: by name for a pinned kernel
// (a re-pinned build is checked against its predecessor's rows), and only
// of the same release for the host, whose kernel is each machine's own.
func (l *Ledger) rows(kernel, release string) map[string]Row {
	m := map[string]Row{}
	for _, r := range l.Rows {
		if r.Kernel == kernel && (kernel != kernels.HostName || r.Release == release) {
			m[r.key()] = r
		}
	}
	return m
}

// Finding is the ledger's verdict on one row of a run.
type Finding struct {
	Row
	Fail bool
	Msg  string
}

// Check compares a kernel's run with the ledger: a finding per program.
// A row the ledger lacks fails, since what loads on which kernel is what
// the ledger is for (refresh it on purpose), except for a host kernel the
// ledger has no rows of (another machine's), where the finding only reports.
func (l *Ledger) Check(kernel, release string, got []bpfload.ProgramStats) []Finding {
	have := l.rows(kernel, release)
	known := kernel != kernels.HostName || len(have) > 0
	var fs []Finding
	for _, st := range got {
		r := Row{Kernel: kernel, Release: release, ProgramStats: st}
		f := Finding{Row: r}
		var why []string
		if h := r.Headroom(); h < l.MinHeadroom {
			why = append(why, fmt.Sprintf("headroom %.0f%% of the %d-instruction limit is under the floor of %.0f%%", 100*h, InsnLimit, 100*l.MinHeadroom))
		}
		old, ok := have[r.key()]
		switch {
		case !ok && known:
			why = append(why, "no ledger row: run 'lab verifier update' and commit the ledger")
		case !ok:
			f.Msg = fmt.Sprintf("%d instructions verified (no ledger rows for %s %s)", st.VerifiedInsn, kernel, release)
		default:
			for _, m := range []struct {
				what     string
				old, now int64
			}{
				{"instructions verified", int64(old.VerifiedInsn), int64(st.VerifiedInsn)},
				{"states", int64(old.TotalStates), int64(st.TotalStates)},
				{"peak states", int64(old.PeakStates), int64(st.PeakStates)},
			} {
				if m.old > 0 && float64(m.now) > float64(m.old)*(1+l.Tolerance) {
					why = append(why, fmt.Sprintf("%s grew %+.0f%% (%d → %d), past the %.0f%% tolerance; if deliberate, run 'lab verifier update'",
						m.what, 100*(float64(m.now)/float64(m.old)-1), m.old, m.now, 100*l.Tolerance))
				}
			}
			f.Msg = fmt.Sprintf("%d instructions verified (ledger %d, %+.1f%%), headroom %.0f%%",
				st.VerifiedInsn, old.VerifiedInsn, 100*(float64(st.VerifiedInsn)/float64(old.VerifiedInsn)-1), 100*r.Headroom())
			if old.Release != release {
				f.Msg += fmt.Sprintf("; the ledger's row is of %s, this is %s", old.Release, release)
			}
		}
		if len(why) > 0 {
			f.Fail = true
			f.Msg = fmt.Sprintf("%s on %s: %s", r.Name(), kernel, strings.Join(why, "; "))
		}
		fs = append(fs, f)
	}
	return fs
}

// Update replaces the kernel's rows with a run's and returns the changes,
// one line each ("kv_xdp (max value 64) on 5.10: 298671 → 301002
// instructions (+0.8%), states 2584 → 2601").
func (l *Ledger) Update(kernel, release string, got []bpfload.ProgramStats) []string {
	old := l.rows(kernel, release)
	var keep []Row
	for _, r := range l.Rows {
		// Keep all but the rows this run replaces (another host release's
		// rows share a key with this one's but stay).
		if o, replaced := old[r.key()]; !replaced || r.Release != o.Release {
			keep = append(keep, r)
		}
	}
	var diff []string
	for _, st := range got {
		r := Row{Kernel: kernel, Release: release, ProgramStats: st}
		o, ok := old[r.key()]
		delete(old, r.key())
		switch {
		case !ok:
			diff = append(diff, fmt.Sprintf("%s on %s: new, %d instructions, %d states", r.Name(), kernel, st.VerifiedInsn, st.TotalStates))
		case o.VerifiedInsn != st.VerifiedInsn || o.TotalStates != st.TotalStates || o.Release != release:
			rel := ""
			if o.Release != release {
				rel = fmt.Sprintf(" (%s → %s)", o.Release, release)
			}
			diff = append(diff, fmt.Sprintf("%s on %s%s: %d → %d instructions (%+.1f%%), states %d → %d", r.Name(), kernel, rel,
				o.VerifiedInsn, st.VerifiedInsn, 100*(float64(st.VerifiedInsn)/float64(o.VerifiedInsn)-1), o.TotalStates, st.TotalStates))
		}
		keep = append(keep, r)
	}
	for _, o := range old {
		diff = append(diff, fmt.Sprintf("%s on %s: removed (was %d instructions)", o.Name(), kernel, o.VerifiedInsn))
	}
	sort.Strings(diff)
	l.Rows = keep
	return diff
}

// UpdateFacts replaces the facts of a kernel (matched by name, and by
// release for the host, as rows are) with a run's and returns the changes,
// one line each ("6.1 (6.1.0-50-amd64 → 6.1.0-51-amd64): bpf_loop in XDP
// no → yes"). A run without probes of a kind keeps the ledger's.
func (l *Ledger) UpdateFacts(f Facts) []string {
	i := slices.IndexFunc(l.Kernels, func(o Facts) bool {
		return o.Kernel == f.Kernel && (f.Kernel != kernels.HostName || o.Release == f.Release)
	})
	if i < 0 {
		l.Kernels = append(l.Kernels, f)
		sort.Slice(l.Kernels, func(a, b int) bool {
			return l.Kernels[a].Kernel+l.Kernels[a].Release < l.Kernels[b].Kernel+l.Kernels[b].Release
		})
		if len(f.Features)+len(f.Limits) == 0 {
			return nil
		}
		return []string{fmt.Sprintf("%s (%s): new, %d features, %d limits", f.Kernel, f.Release, len(f.Features), len(f.Limits))}
	}
	old := l.Kernels[i]
	if f.Features == nil {
		f.Features = old.Features
	}
	if f.Limits == nil {
		f.Limits = old.Limits
	}
	l.Kernels[i] = f
	who := f.Kernel
	if old.Release != f.Release {
		who += fmt.Sprintf(" (%s → %s)", old.Release, f.Release)
	}
	var diff []string
	diff = append(diff, diffFacts(who, old.Features, f.Features)...)
	return append(diff, diffFacts(who, old.Limits, f.Limits)...)
}

// diffFacts lists the rows whose cells differ between two runs.
func diffFacts[F fact](who string, was, now []F) []string {
	cells := map[string]string{}
	for _, f := range was {
		cells[f.row()] = f.cell()
	}
	var diff []string
	for _, f := range now {
		c, ok := cells[f.row()]
		delete(cells, f.row())
		switch {
		case !ok:
			diff = append(diff, fmt.Sprintf("%s: %s: new, %s", who, f.row(), f.cell()))
		case c != f.cell():
			diff = append(diff, fmt.Sprintf("%s: %s: %s → %s", who, f.row(), c, f.cell()))
		}
	}
	for r, c := range cells {
		diff = append(diff, fmt.Sprintf("%s: %s: gone (was %s)", who, r, c))
	}
	sort.Strings(diff)
	return diff
}

// Table renders the ledger for people: a row per program and configuration,
// a column per kernel with instructions verified, states and headroom; the
// tightest kernel of each row is marked. kernels selects and orders the
// columns (nil: every kernel in the ledger).
func (l *Ledger) Table(kernels []string) string {
	if kernels == nil {
		seen := map[string]bool{}
		for _, r := range l.Rows {
			if !seen[r.Kernel] {
				seen[r.Kernel] = true
				kernels = append(kernels, r.Kernel)
			}
		}
		sort.Strings(kernels)
	}
	byName := map[string]map[string]Row{}
	var names []string
	for _, r := range l.Rows {
		if byName[r.Name()] == nil {
			byName[r.Name()] = map[string]Row{}
			names = append(names, r.Name())
		}
		byName[r.Name()][r.Kernel] = r
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(tableHead("program", kernels))
	for _, n := range names {
		tight, min := "", 2.0
		for _, k := range kernels {
			if r, ok := byName[n][k]; ok && r.Headroom() < min {
				tight, min = k, r.Headroom()
			}
		}
		fmt.Fprintf(&b, "| %s |", n)
		for _, k := range kernels {
			r, ok := byName[n][k]
			if !ok {
				b.WriteString(" - |")
				continue
			}
			mark := ""
			if k == tight && len(kernels) > 1 {
				mark = " **tightest**"
			}
			fmt.Fprintf(&b, " %d insns, %d states, %.0f%% headroom%s |", r.VerifiedInsn, r.TotalStates, 100*r.Headroom(), mark)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// tableHead is the head of a Markdown table with a column per kernel.
func tableHead(first string, kernels []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| %s |", first)
	for _, k := range kernels {
		fmt.Fprintf(&b, " %s |", k)
	}
	b.WriteString("\n|---|" + strings.Repeat("--:|", len(kernels)) + "\n")
	return b.String()
}
