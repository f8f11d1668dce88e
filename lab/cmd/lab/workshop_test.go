package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWorkshopCLI walks a student's path through lesson 1 with the built
// binary: list, start, check the starter (fails), hint, check the
// solution, and the refusals.
func TestWorkshopCLI(t *testing.T) {
	c := newLabCLI(t)
	dir := filepath.Join(t.TempDir(), "ws")

	out, _, code := c.run("workshop", "list", "--dir", dir)
	if code != 0 || !strings.Contains(out, "count and pass packets") || strings.Contains(out, "started") {
		t.Errorf("workshop list: exit %d\n%s", code, out)
	}
	c.fails(2, "run 'lab workshop start 1 --dir "+dir+"' first", "workshop", "check", "1", "--dir", dir)

	out, _, code = c.run("workshop", "start", "1", "--dir", dir)
	src := filepath.Join(dir, "01-count", "lesson.bpf.c")
	if code != 0 || !strings.Contains(out, src) {
		t.Fatalf("workshop start 1: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "01-count", "README.md")); err != nil {
		t.Errorf("start did not copy the README: %v", err)
	}
	if out, _, _ := c.run("workshop", "list", "--dir", dir); !strings.Contains(out, "started: "+src) {
		t.Errorf("list does not show lesson 1 started:\n%s", out)
	}

	// Flags after the lesson number, as people type them.
	out, _, code = c.run("workshop", "check", "1", "--dir", dir)
	if code != 1 || !strings.Contains(out, "✗ every frame is counted") || !strings.Contains(out, "fix \"every frame is counted") {
		t.Errorf("checking the starter: exit %d, want 1 and the first failure named\n%s", code, out)
	}
	out, _, code = c.run("workshop", "check", "--solution", "1")
	if code != 0 || !strings.Contains(out, "all 6 checks pass") || !strings.Contains(out, "on to lesson 2") {
		t.Errorf("checking the solution: exit %d\n%s", code, out)
	}
	out, _, code = c.run("workshop", "hint", "1")
	if code != 0 || !strings.Contains(out, "bpf_map_lookup_elem") {
		t.Errorf("workshop hint 1: exit %d\n%s", code, out)
	}

	if err := os.WriteFile(src, []byte("// my work\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.fails(2, "already started and edited", "workshop", "start", "1", "--dir", dir)
	if _, _, code := c.run("workshop", "start", "1", "--dir", dir, "--force"); code != 0 {
		t.Errorf("start --force: exit %d", code)
	}

	c.fails(2, "no lesson \"99\"", "workshop", "check", "99")
	c.fails(2, "usage: lab workshop hint N", "workshop", "hint")
	c.fails(2, "takes one lesson", "workshop", "check", "1", "2")

	// Without the pinned compiler: one line naming the fix.
	cmd := c.command("workshop", "check", "--solution", "1")
	cmd.Env = append(cmd.Env, "PATH="+t.TempDir())
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "clang-19 not found: run `sudo make deps`") {
		t.Errorf("without clang-19: %v\n%s", err, b)
	}
}
