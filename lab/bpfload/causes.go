package bpfload

import (
	"regexp"
	"strings"
)

// A cause is a verifier complaint people meet often, recognised by the
// log's words, and what it usually means in the C that was compiled.
type cause struct {
	re  *regexp.Regexp
	why string
}

// causes is ordered: the verifier's last words come first in what Causes
// returns, as they name the reason the program was refused.
var causes = []cause{
	{regexp.MustCompile(`invalid access to packet|offset is outside of the packet`),
		"a packet read or write without a bounds check: before touching bytes [p, p+n) compare p + n with ctx->data_end and bail out when it is greater, on every path to the access (the check must be on the same pointer the access uses)"},
	{regexp.MustCompile(`invalid mem access '(map_value_or_null|inv|scalar)'`),
		"a pointer used without checking it: bpf_map_lookup_elem returns NULL when the key is absent, so test the result before dereferencing it (a 'scalar'/'inv' access means the register holds a number, not a pointer)"},
	{regexp.MustCompile(`back-edge|infinite loop detected|BPF program is too large|too many states|The sequence of \d+ jumps is too complex`),
		"a loop the verifier cannot prove ends, or one too long to walk: give every loop a constant upper bound (for (i = 0; i < MAX && ...; i++)), keep MAX small, and on kernels before 5.3 unroll it (#pragma unroll)"},
	{regexp.MustCompile(`invalid (indirect )?read from stack|R([1-9]|10) !read_ok`),
		"memory or a register read before it was written: initialise local structs and arrays (= {} or __builtin_memset) before passing them to a helper or a map, padding included"},
	{regexp.MustCompile(`R0 !read_ok|R0 is not a known value`),
		"the program returns without setting a return value on some path: every path must end in return XDP_PASS/XDP_DROP/XDP_TX/..."},
	{regexp.MustCompile(`math between pkt pointer and register with unbounded min value|value is outside of the allowed memory range|unbounded memory access|min value is negative`),
		"an offset the verifier cannot bound: before adding a variable to a pointer, clamp it (if (off > MAX) return ...; or off &= MASK) so the verifier knows its range"},
	{regexp.MustCompile(`combined stack size|stack size .* too large|invalid (indirect )?write to stack|invalid stack off`),
		"too much stack: a BPF program has 512 bytes of stack; keep big buffers in a map (a per-CPU array as scratch), not in locals"},
	{regexp.MustCompile(`unknown func|invalid func unknown#|program of this type cannot use helper|helper call is not allowed`),
		"a helper this kernel or this program type does not have: check the helper's first kernel version, and probe it (cilium/ebpf features) before relying on it"},
	{regexp.MustCompile(`bpf_spin_(un)?lock|holding a lock`),
		"a bpf_spin_lock rule: the lock must live in a map value with BTF, be taken and released in the same function, with no helper calls or packet access while held"},
	{regexp.MustCompile(`cannot write into packet|cannot write into`),
		"a write where the program may not write: XDP can write packet bytes, but not into read-only map values or its context"},
}

// Causes explains a verifier log: for each common mistake the log shows,
// one sentence on what it usually means and how to fix it. The log's last
// lines are searched first; nothing is returned for a log no rule knows.
func Causes(log []string) []string {
	var out []string
	seen := map[int]bool{}
	for i := len(log) - 1; i >= 0 && i >= len(log)-20; i-- {
		for j, c := range causes {
			if !seen[j] && c.re.MatchString(log[i]) {
				seen[j] = true
				out = append(out, c.why)
			}
		}
	}
	return out
}

// statsLine matches the statistics a stats-level log ends with, which
// would push the reason out of the lines people read.
var statsLine = regexp.MustCompile(`^(verification time \d+|stack depth [0-9+]+|processed \d+ insns)`)

// lastLines is the tail of a verifier log people read, where the reason
// is: its last n lines other than statistics.
func lastLines(log []string, n int) []string {
	var keep []string
	for _, l := range log {
		if !statsLine.MatchString(l) {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return keep
}

// formatCauses renders Causes for a message, indented, or "".
func formatCauses(log []string) string {
	cs := Causes(log)
	if len(cs) == 0 {
		return ""
	}
	return "\n  likely cause: " + strings.Join(cs, "\n  or: ")
}
