// Package workshop is the XDP workshop: lessons that build, step by step,
// the heart of the store and the proxy, each with a checker that builds the
// student's C with the pinned clang, loads it through the kernel's verifier
// and tests it with BPF_PROG_TEST_RUN and on a veth pair.
//
// A lesson is a folder NN-slug holding README.md (what the student reads)
// and lesson.bpf.c, from which both the starter (what the student edits) and
// the reference solution derive (Derive); its checks are Go, in this package, in the file named after the slug. The
// folders are embedded, so the lab binary carries them.
package workshop

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strconv"
)

//go:embed */README.md */lesson.bpf.c
var files embed.FS

// Lesson is one step of the workshop.
type Lesson struct {
	N       int
	Slug    string // "count": the folder is 01-count
	Title   string
	Program string // the XDP function the checks run
	// Vars are set in the object's load-time constants (const volatile)
	// before the checks load it.
	Vars   map[string]any
	Checks []Check
}

// Check is one thing a lesson's program must do. Run returns nil when the
// program does it, or an error whose message says, in a student's words,
// what the program did instead.
type Check struct {
	Name string
	Run  func(e *Env) error
	// Hint nudges a student whose program fails the check.
	Hint string
}

// Files of a lesson: README.md is in its folder, beside SourceFile; the
// starter and the solution are derived from SourceFile.
const (
	ReadmeFile   = "README.md"
	StarterFile  = "starter.bpf.c"
	SolutionFile = "solution.bpf.c"
)

var lessons []*Lesson

// register adds a lesson, in order of N; each lesson's file does so in
// init (TestLessonsComplete checks they are numbered 1 to N).
func register(l *Lesson) {
	i := sort.Search(len(lessons), func(i int) bool { return lessons[i].N >= l.N })
	lessons = slices.Insert(lessons, i, l)
}

// Lessons are the workshop's lessons, in order.
func Lessons() []*Lesson { return lessons }

// Lookup finds a lesson by number ("1") or slug ("count").
func Lookup(s string) (*Lesson, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= len(lessons) {
		return lessons[n-1], nil
	}
	for _, l := range lessons {
		if l.Slug == s {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no lesson %q: lessons are 1 to %d (lab workshop list)", s, len(lessons))
}

// Dir is the lesson's folder name, "01-count".
func (l *Lesson) Dir() string { return fmt.Sprintf("%02d-%s", l.N, l.Slug) }

// File returns one of the lesson's files: ReadmeFile or SourceFile as
// stored, StarterFile or SolutionFile derived from SourceFile.
func (l *Lesson) File(name string) ([]byte, error) {
	if name != StarterFile && name != SolutionFile {
		return fs.ReadFile(files, l.Dir()+"/"+name)
	}
	src, err := fs.ReadFile(files, l.Dir()+"/"+SourceFile)
	if err != nil {
		return nil, err
	}
	b, err := Derive(src, name == StarterFile)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", l.Dir(), SourceFile, err)
	}
	return b, nil
}

func (l *Lesson) String() string { return fmt.Sprintf("lesson %d (%s): %s", l.N, l.Slug, l.Title) }
