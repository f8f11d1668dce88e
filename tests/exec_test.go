package tests

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExec holds `lab vm exec` to what go test -exec needs of it, in each
// selected kernel: output and exit code come back unchanged, a real test
// package runs through go test -exec in its own directory, and a guest
// kernel panic fails the run with the kernel log's tail. -backend picks
// how the guests boot, as for the matrix.
func TestExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("booting guests over the host's root needs root: run as root")
	}
	root := moduleRoot(t)
	lab := filepath.Join(t.TempDir(), "lab")
	build := exec.Command("go", "build", "-o", lab, "./lab/cmd/lab")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build lab: %v\n%s", err, out)
	}
	for _, k := range selectedKernels(t) {
		t.Run(k.Name, func(t *testing.T) {
			t.Parallel()
			progressf("%s: checking lab vm exec (%s)", k.Name, *flagBackend)
			vmExec := []string{"vm", "exec", "--kernel", k.Name, "--backend", *flagBackend}
			t.Run("output", func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				cmd := exec.Command(lab, append(vmExec, "sh", "-c", `printf 'a\nb'; printf 'to stderr' >&2; echo "$XDPLAB_EXEC_VAR"; exit 7`)...)
				cmd.Env = append(os.Environ(), "XDPLAB_EXEC_VAR=passed through")
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 7 {
					t.Errorf("exit: %v, want status 7", err)
				}
				if got := stdout.String(); got != "a\nbpassed through\n" {
					t.Errorf("stdout %q, want %q", got, "a\nbpassed through\n")
				}
				if got := stderr.String(); got != "to stderr" {
					t.Errorf("stderr %q, want %q", got, "to stderr")
				}
			})
			t.Run("go test -exec", func(t *testing.T) {
				// A package's tests in the guest, with -test.* flags
				// passed on, in the package's directory: the fuzz test
				// runs each seed of its testdata corpus as a subtest.
				seeds, _ := filepath.Glob(filepath.Join(root, "lab", "memcache", "testdata", "fuzz", "FuzzFrame", "*"))
				if len(seeds) == 0 {
					t.Fatal("lab/memcache has no FuzzFrame corpus to look for")
				}
				cmd := exec.Command("go", "test", "-count=1", "-v", "-exec", lab+" "+strings.Join(vmExec, " "), "-run", "FuzzFrame", "./lab/memcache")
				cmd.Dir = root
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("go test -exec: %v\n%s", err, out)
				}
				for _, s := range seeds {
					if want := "--- PASS: FuzzFrame/" + filepath.Base(s); !strings.Contains(string(out), want) {
						t.Errorf("no %q: the testdata corpus did not reach the guest\n%s", want, out)
					}
				}
			})
			if k.IsHost() {
				return // the host kernel is not ours to panic
			}
			t.Run("panic", func(t *testing.T) {
				var stderr bytes.Buffer
				cmd := exec.Command(lab, append(vmExec, "sh", "-c", "echo c > /proc/sysrq-trigger; sleep 60")...)
				cmd.Stderr = &stderr
				err := cmd.Run()
				if err == nil {
					t.Fatal("a guest kernel panic: exit status 0")
				}
				for _, want := range []string{"guest kernel panic", "guest kernel log, last lines", "sysrq"} {
					if !strings.Contains(stderr.String(), want) {
						t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
					}
				}
			})
		})
	}
}
