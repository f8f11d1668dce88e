package verifier

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Feature is a kernel capability a shipped program calls on or picks a code
// path by, as probed (cilium/ebpf's features package) on one kernel.
type Feature struct {
	Name string `json:"name"` // "bpf_fib_lookup in XDP"
	Have bool   `json:"have"`
	// Since is the Linux version that brought the feature, for those a
	// program can do without: on a kernel at or past it "missing" is a
	// broken probe or guest, and the program's test fails.
	Since string `json:"since,omitempty"`
	// Path is the code path the program took with this answer.
	Path string `json:"path,omitempty"`
}

func (f Feature) row() string { return f.Name }

func (f Feature) cell() string {
	c := "no"
	if f.Have {
		c = "yes"
	}
	if f.Path != "" {
		c += " → " + f.Path
	}
	return c
}

func (f Feature) String() string { return f.Name + ": " + f.cell() }

// FeaturesTable renders feature probes for people: a row per feature, a
// column per kernel, as LimitsTable does.
func FeaturesTable(runs map[string][]Feature, kernels []string) string {
	return factTable("feature", runs, kernels)
}

// ProbeHelpers probes, on the running kernel, every helper the spec's
// programs call, once per program type: what a program needs is read from
// the program itself, not from a list that can go stale.
func ProbeHelpers(spec *ebpf.CollectionSpec) ([]Feature, error) {
	type use struct {
		typ ebpf.ProgramType
		fn  asm.BuiltinFunc
	}
	seen := map[use]bool{}
	var fs []Feature
	for _, p := range spec.Programs {
		for _, ins := range p.Instructions {
			if !ins.IsBuiltinCall() {
				continue
			}
			u := use{p.Type, asm.BuiltinFunc(ins.Constant)}
			if seen[u] {
				continue
			}
			seen[u] = true
			err := features.HaveProgramHelper(u.typ, u.fn)
			if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
				return nil, fmt.Errorf("probe %s in %s: %w", helperName(u.fn), u.typ, err)
			}
			fs = append(fs, Feature{Name: HelperFeature(u.typ, u.fn), Have: err == nil})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs, nil
}

// HelperFeature is the name ProbeHelpers gives fn called from typ.
func HelperFeature(typ ebpf.ProgramType, fn asm.BuiltinFunc) string {
	return fmt.Sprintf("%s in %s", helperName(fn), typ)
}

// helperName is the kernel's name of a helper: FnKtimeGetCoarseNs is
// bpf_ktime_get_coarse_ns.
func helperName(fn asm.BuiltinFunc) string {
	var b strings.Builder
	b.WriteString("bpf")
	for _, r := range strings.TrimPrefix(fn.String(), "Fn") {
		if unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
