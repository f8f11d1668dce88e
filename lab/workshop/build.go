package workshop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Compiler is the pinned clang, the one the project's bpf2go lines use.
const Compiler = "clang-19"

// cflags are the project's (lab/kv/gen.go) minus its include directory:
// a lesson's C includes only system and libbpf headers.
var cflags = []string{"-O2", "-g", "-Wall", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"}

// ErrNoCompiler says the pinned clang is missing, and how to get it.
var ErrNoCompiler = errors.New(Compiler + " not found: run `sudo make deps` in the repository (or `sudo apt install clang-19 libbpf-dev`)")

// Compile builds src into dir/NAME.o and returns its path and the
// compiler's warnings. A compile error is the compiler's own lines.
func Compile(ctx context.Context, src, dir string) (obj, warnings string, err error) {
	cc, err := exec.LookPath(Compiler)
	if err != nil {
		return "", "", ErrNoCompiler
	}
	obj = filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".c")+".o")
	args := append(append([]string{}, cflags...), "-c", src, "-o", obj)
	cmd := exec.CommandContext(ctx, cc, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimRight(out.String(), "\n")
		if msg == "" {
			msg = err.Error()
		}
		return "", "", fmt.Errorf("%s says:\n%s", Compiler, msg)
	}
	return obj, strings.TrimRight(out.String(), "\n"), nil
}
