// Package kvvariants holds the store (bpf/kv.bpf.c) compiled with one
// compile-time size changed per object: the most keys one GET carries
// (GET_KEYS_MAX), the largest in-kernel value slot (KV_VAL_MAX), the longest
// key (KV_KEY_MAX). The limit probes load them to find the largest size each
// kernel's verifier still accepts.
//
// The objects are committed, made by `make generate` (./internal/gen), and
// checked by `make check-generate` like every bpf2go object: the guests run
// under emulation, too slow to compile C at test time, and the test binary
// runs in the guest with no host step before it (go test -exec, the matrix
// driver), so the objects must exist before the test is built. A ladder of
// a few rungs per size keeps them to ~1.5 MB (git stores them compressed,
// and the identical shipped-size rungs once).
package kvvariants

import (
	"bytes"
	"embed"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
)

//go:generate go run ./internal/gen

//go:embed kv-*_bpfel.o
var objects embed.FS

// Variant is one compiled object: Macro set to Value.
type Variant struct {
	Macro string
	Value int
	file  string
}

// Ladder is macro's variants, smallest first; the first is the shipped size.
func Ladder(macro string) ([]Variant, error) {
	ents, err := objects.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var vs []Variant
	for _, e := range ents {
		// kv-MACRO-VALUE_bpfel.o, as internal/gen names them.
		name := strings.TrimSuffix(strings.TrimPrefix(e.Name(), "kv-"), "_bpfel.o")
		i := strings.LastIndexByte(name, '-')
		if i < 0 || name[:i] != macro {
			continue
		}
		n, err := strconv.Atoi(name[i+1:])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		vs = append(vs, Variant{Macro: macro, Value: n, file: e.Name()})
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("no variants of %s (run make generate)", macro)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Value < vs[j].Value })
	return vs, nil
}

// Spec parses the variant's object.
func (v Variant) Spec() (*ebpf.CollectionSpec, error) {
	b, err := objects.ReadFile(v.file)
	if err != nil {
		return nil, err
	}
	return ebpf.LoadCollectionSpecFromReader(bytes.NewReader(b))
}

func (v Variant) String() string { return fmt.Sprintf("%s=%d", v.Macro, v.Value) }
