// Command gen compiles the store's variants that lab/verifier/limits loads:
// bpf/kv.bpf.c with one compile-time size overridden per object (the
// #ifndef-guarded GET_KEYS_MAX, KV_VAL_MAX, KV_KEY_MAX), compiled by bpf2go's
// own compile function with the flags of lab/kv's go:generate line, so a
// variant differs from the shipped store in that one size only. Run from
// kvvariants by its go:generate line; writes kv-MACRO-VALUE_bpfel.o there.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/cmd/bpf2go/gen"
)

// ladder is each size's rungs: the shipped value first, then larger ones
// up to past what the store could use or where the kernel refuses. The
// probe searches the rungs on each kernel, so a rung added here is a new
// point measured (and ~125 KB committed).
var ladder = []struct {
	macro  string
	values []int
}{
	// A datagram's 1480 bytes carry at most 738 keys.
	{"GET_KEYS_MAX", []int{24, 128, 1024}},
	// The per-CPU scratch holds two slots, and per-CPU values stop at 32 KiB.
	{"KV_VAL_MAX", []int{1024, 2048, 4096, 8192, 12288, 16384}},
	// 2048 bytes is the whole request buffer.
	{"KV_KEY_MAX", []int{250, 1024, 2048}},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	const bpfDir = "../../../../bpf" // from kvvariants, where go generate runs
	target, _, err := gen.FindTarget("bpfel")
	if err != nil {
		return err
	}
	cc, strip := env("BPF2GO_CC", "clang-19"), env("BPF2GO_STRIP", "llvm-strip-19")
	// A rung dropped from the ladder leaves no stale object behind.
	old, _ := filepath.Glob("kv-*_bpfel.o")
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	for _, l := range ladder {
		for _, v := range l.values {
			flags := []string{"-O2", "-g", "-Wall", "-Werror", "-I" + bpfDir + "/include", "-I/usr/include/x86_64-linux-gnu",
				fmt.Sprintf("-D%s=%d", l.macro, v)}
			if l.macro == "KV_KEY_MAX" {
				// The stored key slot holds the longest key in whole words,
				// as 256 holds 250.
				flags = append(flags, fmt.Sprintf("-DKV_KEY_SLOT=%d", (v+7)&^7))
			}
			dest := fmt.Sprintf("kv-%s-%d_bpfel.o", l.macro, v)
			if err := gen.Compile(gen.CompileArgs{
				CC: cc, Strip: strip, Flags: flags, Workdir: wd, Target: target,
				Source: filepath.Join(wd, bpfDir, "kv.bpf.c"), Dest: filepath.Join(wd, dest),
			}); err != nil {
				return fmt.Errorf("%s: %w", dest, err)
			}
		}
	}
	return nil
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
