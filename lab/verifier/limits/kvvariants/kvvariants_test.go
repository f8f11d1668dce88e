package kvvariants

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestVariantsCarryTheirSize reads each variant's size back from its BTF
// (enum kv_limit in bpf/include/kv.h: KV_LIMIT_<macro without KV_>), so an
// object whose -D did not take (a macro renamed in C, a guard lost) fails
// here instead of probing the shipped size under another name.
func TestVariantsCarryTheirSize(t *testing.T) {
	for _, macro := range []string{"GET_KEYS_MAX", "KV_VAL_MAX", "KV_KEY_MAX"} {
		vs, err := Ladder(macro)
		if err != nil {
			t.Fatal(err)
		}
		want := "KV_LIMIT_" + strings.TrimPrefix(macro, "KV_")
		for _, v := range vs {
			spec, err := v.Spec()
			if err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			var limits *btf.Enum
			if err := spec.Types.TypeByName("kv_limit", &limits); err != nil {
				t.Fatalf("%s: enum kv_limit: %v", v, err)
			}
			found := false
			for _, ev := range limits.Values {
				if ev.Name != want {
					continue
				}
				found = true
				if ev.Value != uint64(v.Value) {
					t.Errorf("%s: the object has %s = %d", v, want, ev.Value)
				}
			}
			if !found {
				t.Errorf("%s: enum kv_limit has no %s", v, want)
			}
		}
	}
}
