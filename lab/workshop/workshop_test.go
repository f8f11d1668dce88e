package workshop

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// checkFile writes a lesson's file to a temporary directory and checks it.
func checkFile(t *testing.T, l *Lesson, name string, src []byte) *Report {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("checking a lesson loads BPF and builds namespaces: needs root")
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := l.Check(context.Background(), Options{Source: path, Short: testing.Short()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s:\n%s", l, name, r)
	return r
}

func lessonFile(t *testing.T, l *Lesson, name string) []byte {
	t.Helper()
	b, err := l.File(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The reference solution of every lesson passes every check.
func TestSolutions(t *testing.T) {
	for _, l := range Lessons() {
		t.Run(l.Dir(), func(t *testing.T) {
			r := checkFile(t, l, SolutionFile, lessonFile(t, l, SolutionFile))
			if !r.Passed() {
				t.Errorf("the solution fails:\n%s", r)
			}
		})
	}
}

// firstFailures is the check each untouched starter must fail first: the
// first thing a student is asked to do.
var firstFailures = map[string]string{
	"count":   CheckCountEvery,
	"parse":   CheckParseGet,
	"reply":   CheckReplyTX,
	"get":     CheckGetHit,
	"set":     CheckSetStored,
	"old":     CheckOldPath,
	"proxy":   CheckProxyRoute,
	"measure": CheckMeasureCount,
}

// Every untouched starter builds, loads, and fails where its first TODO is.
func TestStarters(t *testing.T) {
	for _, l := range Lessons() {
		t.Run(l.Dir(), func(t *testing.T) {
			want, ok := firstFailures[l.Slug]
			if !ok {
				t.Fatalf("no expected first failure for %s: add it to firstFailures", l.Slug)
			}
			// Lesson 6's starter calls helpers from 5.18: a kernel
			// without them refuses it at once, which is the lesson.
			have, err := haveHelper(asm.FnXdpLoadBytes)
			if err != nil {
				t.Fatal(err)
			}
			if l.Slug == "old" && !have {
				want = CheckLoads
			}
			r := checkFile(t, l, StarterFile, lessonFile(t, l, StarterFile))
			f := r.FirstFailure()
			if f == nil {
				t.Fatalf("the starter fails no check:\n%s", r)
			}
			if f.Name != want {
				t.Errorf("the starter fails %q first, want %q:\n%s", f.Name, want, r)
			}
			if want == CheckLoads && !strings.Contains(f.Err.Error(), "helper this kernel") {
				t.Errorf("the verifier's refusal lacks its explanation:\n%s", r)
			}
		})
	}
}

func TestLessonsComplete(t *testing.T) {
	for i, l := range Lessons() {
		if l.N != i+1 {
			t.Errorf("lesson %s is number %d, in place %d: number lessons 1 to N", l.Slug, l.N, i+1)
		}
		for _, f := range []string{ReadmeFile, SourceFile, StarterFile, SolutionFile} {
			if b, err := l.File(f); err != nil {
				t.Errorf("%s: %s: %v", l.Dir(), f, err)
			} else if len(b) == 0 {
				t.Errorf("%s: %s is empty", l.Dir(), f)
			}
		}
		if !strings.HasPrefix(string(lessonFile(t, l, ReadmeFile)), "# Lesson ") {
			t.Errorf("%s: README.md does not start with '# Lesson '", l.Dir())
		}
	}
}

// A verifier rejection reaches the student as the verifier's own words and
// the likely cause: here lesson 1's solution with its Ethernet bounds check
// taken out.
func TestVerifierRejectionExplained(t *testing.T) {
	l, err := Lookup("count")
	if err != nil {
		t.Fatal(err)
	}
	src := string(lessonFile(t, l, SolutionFile))
	check := "if ((void *)(eth + 1) > data_end)\n\t\treturn XDP_PASS;\n"
	if !strings.Contains(src, check) {
		t.Fatalf("lesson 1's solution has no %q to take out", check)
	}
	r := checkFile(t, l, "nobounds.bpf.c", []byte(strings.Replace(src, check, "", 1)))
	f := r.FirstFailure()
	if f == nil || f.Name != CheckLoads {
		t.Fatalf("want a failure to load, got:\n%s", r)
	}
	for _, want := range []string{"invalid access to packet", "likely cause", "bounds check"} {
		if !strings.Contains(f.Err.Error(), want) {
			t.Errorf("the student's message lacks %q:\n%s", want, r)
		}
	}
}

// An unbounded loop is explained as one, also where the kernel's refusal
// (EFAULT) comes without a log from cilium/ebpf: lesson 2's key loop
// without its bound.
func TestUnboundedLoopExplained(t *testing.T) {
	l, _ := Lookup("parse")
	src := string(lessonFile(t, l, SolutionFile))
	bounded := "for (n = 0; n <= KEY_MAX; n++) {"
	if !strings.Contains(src, bounded) {
		t.Fatalf("lesson 2's solution has no %q", bounded)
	}
	src = strings.Replace(src, bounded, "for (n = 0;; n++) {", 1)
	src = strings.Replace(src, "if (n == 0 || n > KEY_MAX)\n\t\treturn -1;\n\t// \"> data_end\"", "if (n == 0)\n\t\treturn -1;\n\t// \"> data_end\"", 1)
	r := checkFile(t, l, "unbounded.bpf.c", []byte(src))
	f := r.FirstFailure()
	if f == nil || f.Name != CheckLoads || !strings.Contains(f.Err.Error(), "likely cause: a loop the verifier cannot prove ends") {
		t.Fatalf("want a refusal explained as a loop, got:\n%s", r)
	}
}

// A compile error comes back as the compiler's lines.
func TestCompileErrorShown(t *testing.T) {
	l, _ := Lookup("1")
	r := checkFile(t, l, "broken.bpf.c", []byte("int x = ;\n"))
	f := r.FirstFailure()
	if f == nil || f.Name != CheckBuilds || !strings.Contains(f.Err.Error(), "broken.bpf.c:1:9: error") {
		t.Fatalf("want clang's error line, got:\n%s", r)
	}
}

func TestStart(t *testing.T) {
	l, _ := Lookup("count")
	dir := t.TempDir()
	src, err := l.Start(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(mustRead(t, src)), string(lessonFile(t, l, StarterFile)); got != want {
		t.Fatal("the student's file is not the starter")
	}
	if _, err := l.Start(dir, false); err != nil {
		t.Errorf("starting again over an untouched starter: %v", err)
	}
	if err := os.WriteFile(src, []byte("// my work\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Start(dir, false); !errors.Is(err, ErrEdited) {
		t.Errorf("starting over an edited file: %v, want ErrEdited", err)
	}
	if string(mustRead(t, src)) != "// my work\n" {
		t.Error("the edited file was overwritten")
	}
	if _, err := l.Start(dir, true); err != nil || string(mustRead(t, src)) != string(lessonFile(t, l, StarterFile)) {
		t.Errorf("--force did not put the starter back: %v", err)
	}
	t.Setenv("SUDO_UID", "65534")
	t.Setenv("SUDO_GID", "65534")
	if os.Geteuid() == 0 {
		if _, err := l.Start(dir, true); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(src, &st); err != nil || st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("under sudo the file belongs to %d:%d, want the sudoer's 65534:65534 (%v)", st.Uid, st.Gid, err)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Lesson 7's veth check sends the first five keys: they must reach both
// backends, or a proxy sending everything to one would pass.
func TestProxyKeysSpread(t *testing.T) {
	seen := map[int]bool{}
	for _, k := range proxyKeys[:5] {
		seen[backendOf(k)] = true
	}
	if len(seen) != nBackends {
		t.Errorf("proxyKeys[:5] reach backends %v only", seen)
	}
}

// A starter is its solution with the student's parts cut out: every
// starter-only block past the header comment holds a TODO. (The shared
// lines are one text, so only these blocks can drift.)
func TestStarterBlocksHaveTODOs(t *testing.T) {
	for _, l := range Lessons() {
		var block []string
		inBlock, header := false, true
		for i, line := range strings.Split(string(lessonFile(t, l, SourceFile)), "\n") {
			switch strings.TrimSpace(line) {
			case starterBegin:
				inBlock, block = true, nil
				continue
			case starterEnd:
				if inBlock && !header && !strings.Contains(strings.Join(block, "\n"), "TODO") {
					t.Errorf("%s/%s: the starter block ending at line %d has no TODO:\n%s",
						l.Dir(), SourceFile, i+1, strings.Join(block, "\n"))
				}
				inBlock = false
				continue
			}
			if strings.HasPrefix(line, "#include") {
				header = false
			}
			if inBlock {
				block = append(block, line)
			}
		}
	}
}
