package verifier

import (
	"fmt"
	"sort"
	"strings"
)

// The limits the kernel itself defines, which the limit probes
// (lab/verifier/limits) assert on every pinned kernel.
const (
	// StackLimit is MAX_BPF_STACK, the bytes of stack one program may use.
	StackLimit = 512
	// TailCallLimit is how many tail calls one run may chain on x86-64:
	// MAX_TAIL_CALL_CNT is 33 since 5.17, and the x86 JIT allowed 33 before
	// too, when the constant said 32 (the off-by-one the change named).
	TailCallLimit = 33
)

// Limit is one limit probe's result on one kernel: what the search found
// with the real verifier, and the bound the kernel defines, if any.
type Limit struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
	Unit  string `json:"unit"`
	// AtLeast: nothing in the searched range was refused, so Value is a
	// lower bound, not the limit.
	AtLeast bool `json:"at_least,omitempty"`
	// Bound is what the kernel defines (MAX_BPF_STACK, ...); 0 for a limit
	// that only the search defines.
	Bound int64 `json:"bound,omitempty"`
	// Note says how the value was found: e.g. the first size refused and
	// the verifier's words for it.
	Note string `json:"note,omitempty"`
}

func (l Limit) String() string {
	s := l.cell()
	if l.Bound != 0 {
		s += fmt.Sprintf(" (kernel bound %d)", l.Bound)
	}
	if l.Note != "" {
		s += "; " + l.Note
	}
	return l.Name + ": " + s
}

func (l Limit) cell() string {
	ge := ""
	if l.AtLeast {
		ge = "≥ "
	}
	return fmt.Sprintf("%s%d %s", ge, l.Value, l.Unit)
}

// LimitsTable renders limit probes' results for people: a row per limit,
// a column per kernel (runs maps a kernel to its results; kernels orders the
// columns, nil for all, sorted).
func LimitsTable(runs map[string][]Limit, kernels []string) string {
	return factTable("limit", runs, kernels)
}

// FactsTable is LimitsTable with another name for its first column, for
// per-kernel measurements that are not the verifier's (first: "measure").
func FactsTable(first string, runs map[string][]Limit, kernels []string) string {
	return factTable(first, runs, kernels)
}

// fact is a per-kernel finding a table shows: a row name and a cell.
type fact interface {
	row() string
	cell() string
}

func (l Limit) row() string { return l.Name }

// factTable renders per-kernel facts, a row per name and a column per
// kernel (kernels orders the columns, nil for all, sorted).
func factTable[F fact](first string, runs map[string][]F, kernels []string) string {
	if kernels == nil {
		for k := range runs {
			kernels = append(kernels, k)
		}
		sort.Strings(kernels)
	}
	cells := map[string]map[string]string{}
	var names []string
	for _, k := range kernels {
		for _, f := range runs[k] {
			if cells[f.row()] == nil {
				cells[f.row()] = map[string]string{}
				names = append(names, f.row())
			}
			cells[f.row()][k] = f.cell()
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(tableHead(first, kernels))
	for _, n := range names {
		fmt.Fprintf(&b, "| %s |", n)
		for _, k := range kernels {
			c, ok := cells[n][k]
			if !ok {
				c = "-"
			}
			fmt.Fprintf(&b, " %s |", c)
		}
		b.WriteString("\n")
	}
	return b.String()
}
