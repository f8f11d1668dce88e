package workshop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplab/xdplab/lab/bench"
	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/netlab"
)

// The two checks every lesson starts with.
const (
	CheckBuilds = "builds with " + Compiler
	CheckLoads  = "passes the verifier"
)

// Options say what to check and where to say how it goes.
type Options struct {
	// Source is the student's C; Object, if set instead, an object built
	// from it already (the host builds, a guest checks).
	Source, Object string
	// Out gets a line per check as it finishes; nil: quiet.
	Out io.Writer
	// ObjectDir keeps the built object there (default: a temporary
	// directory, removed); BuildOnly stops after building, for a guest
	// to check the object.
	ObjectDir string
	BuildOnly bool
	// Short trims traffic (go test -short; guests under emulation).
	Short bool
}

// Result is one check's outcome: passed (Err nil, Skip ""), failed or
// skipped.
type Result struct {
	Name string
	Err  error
	Skip string
	Took time.Duration
	Hint string
	// Note is what a check says beyond pass or fail: the compiler's
	// warnings, a benchmark's numbers.
	Note string
}

// Report is a lesson check's outcome.
type Report struct {
	Lesson  *Lesson
	Results []Result
	// NotRun are the checks after the first failure: they build on it.
	NotRun []string
	Took   time.Duration
	// Object is the object built (Options.ObjectDir) or checked.
	Object string
}

// Passed says every check ran and none failed.
func (r *Report) Passed() bool { return r.FirstFailure() == nil && len(r.NotRun) == 0 }

// FirstFailure is the first failed check, or nil.
func (r *Report) FirstFailure() *Result {
	for i := range r.Results {
		if r.Results[i].Err != nil {
			return &r.Results[i]
		}
	}
	return nil
}

// String is the report as Check prints it.
func (r *Report) String() string {
	var b strings.Builder
	for _, res := range r.Results {
		b.WriteString(res.String())
	}
	for _, n := range r.NotRun {
		fmt.Fprintf(&b, "  · %s (not run: fix the failure above first)\n", n)
	}
	return b.String()
}

func (res Result) String() string {
	switch {
	case res.Skip != "":
		return fmt.Sprintf("  - %s: skipped, %s\n", res.Name, res.Skip)
	case res.Err == nil:
		return fmt.Sprintf("  ✓ %s (%.1fs)\n", res.Name, res.Took.Seconds()) + res.note()
	}
	s := fmt.Sprintf("  ✗ %s: %s\n", res.Name, indent(res.Err.Error())) + res.note()
	if res.Hint != "" {
		s += "      hint: " + indent(res.Hint) + "\n"
	}
	return s
}

// note is the Note, indented under its check, or "".
func (res Result) note() string {
	if res.Note == "" {
		return ""
	}
	return "      " + indent(res.Note) + "\n"
}

// indent puts a multi-line message's later lines under its first.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n      ") }

// skipError makes a check a skip, with its reason.
type skipError struct{ why string }

func (s skipError) Error() string { return s.why }

// Skip returns from a check that cannot run here (a kernel without a
// feature, found by a probe), saying why.
func Skip(format string, args ...any) error { return skipError{fmt.Sprintf(format, args...)} }

// ErrInterrupted is Check's answer when its context ends first.
var ErrInterrupted = errors.New("interrupted (what the check built is removed)")

// Check builds, loads and tests the student's program, stopping at the
// first failure. It returns an error only when it could not check at all.
func (l *Lesson) Check(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	r := &Report{Lesson: l}
	defer func() { r.Took = time.Since(start) }()
	e := &Env{ctx: ctx, lesson: l, short: o.Short}
	defer e.close()

	// record adds res, started at t0, with its outcome err. A step cut
	// short by ctx is no outcome: Check returns ErrInterrupted.
	record := func(res Result, t0 time.Time, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		res.Took = time.Since(t0)
		if len(e.notes) > 0 {
			res.Note = strings.Join(e.notes, "\n")
			e.notes = nil
		}
		var se skipError
		if errors.As(err, &se) {
			res.Skip = se.why
		} else if err != nil {
			res.Err = err
		} else {
			res.Hint = ""
		}
		r.Results = append(r.Results, res)
		if o.Out != nil {
			fmt.Fprint(o.Out, res.String())
		}
		return res.Err == nil
	}
	names := []string{CheckLoads}
	for _, c := range l.Checks {
		names = append(names, c.Name)
	}
	stop := func(i int) (*Report, error) {
		if ctx.Err() != nil {
			return nil, ErrInterrupted
		}
		r.NotRun = names[i:]
		if o.Out != nil {
			for _, n := range r.NotRun {
				fmt.Fprintf(o.Out, "  · %s (not run: fix the failure above first)\n", n)
			}
		}
		return r, nil
	}

	r.Object = o.Object
	if r.Object == "" {
		t0 := time.Now()
		dir := o.ObjectDir
		if dir == "" {
			d, err := os.MkdirTemp("", "workshop-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(d)
			dir = d
		}
		obj, warnings, err := Compile(ctx, o.Source, dir)
		if errors.Is(err, ErrNoCompiler) {
			return nil, err
		}
		if warnings != "" {
			e.Note("clang's warnings:\n%s", warnings)
		}
		if !record(Result{Name: CheckBuilds}, t0, err) {
			return stop(0)
		}
		r.Object = obj
		if o.BuildOnly {
			return r, nil
		}
	}
	t0 := time.Now()
	if !record(Result{Name: CheckLoads}, t0, e.load(r.Object)) {
		return stop(1)
	}
	for i, c := range l.Checks {
		t0 := time.Now()
		if !record(Result{Name: c.Name, Hint: c.Hint}, t0, c.Run(e)) {
			return stop(i + 2)
		}
	}
	return r, nil
}

// Env is what a check works with: the loaded program and its maps, and a
// veth pair when a check asks for one.
type Env struct {
	ctx    context.Context
	lesson *Lesson
	short  bool
	spec   *ebpf.CollectionSpec // as compiled, for checks of the program's shape
	coll   *ebpf.Collection
	prog   *ebpf.Program
	pair   *pair
	// closers remove what the checks built (topologies), last first.
	closers []func()
	// notes are what the running check has to say beyond pass or fail.
	notes []string
	// benched is lesson 8's benchmark of the student's store, which the
	// next check sets beside memcached's.
	benched *bench.Result
}

// Note adds a line to what the running check reports, passed or not.
func (e *Env) Note(format string, args ...any) {
	e.notes = append(e.notes, fmt.Sprintf(format, args...))
}

func (e *Env) load(obj string) error {
	netlab.RemoveMemlock()
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		return fmt.Errorf("cannot read the compiled object: %w", err)
	}
	e.spec = spec
	ps, ok := spec.Programs[e.lesson.Program]
	if !ok {
		return fmt.Errorf("no function %s in SEC(\"xdp\"): the checker runs that one (keep the starter's name)", e.lesson.Program)
	}
	if ps.Type != ebpf.XDP {
		return fmt.Errorf("%s is a %s program, want XDP: put it in SEC(\"xdp\")", e.lesson.Program, ps.Type)
	}
	e.coll, e.prog, err = e.loadWith(e.lesson.Vars)
	return err
}

// loadWith loads the compiled program with its load-time constants set
// to vars. A verifier rejection is the verifier's words, explained.
func (e *Env) loadWith(vars map[string]any) (*ebpf.Collection, *ebpf.Program, error) {
	spec := e.spec.Copy()
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, nil, fmt.Errorf("no const volatile %s in your program: keep the starter's", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, nil, fmt.Errorf("setting %s: %w", name, err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, *bpfload.Options())
	var ve *ebpf.VerifierError
	if errors.Is(err, unix.EFAULT) && !errors.As(err, &ve) {
		err = e.refusalLog(spec, err)
	}
	if errors.As(err, &ve) {
		// Once more with the instruction log, whose last lines name the
		// C source line the verifier stopped at (from the -g line info).
		o := bpfload.Options()
		o.Programs.LogLevel = ebpf.LogLevelBranch
		if _, err2 := ebpf.NewCollectionWithOptions(spec, *o); errors.As(err2, &ve) {
			err = err2
		}
	}
	if err != nil {
		return nil, nil, bpfload.Explain("program", err)
	}
	return coll, coll.Programs[e.lesson.Program], nil
}

// refusalLog finds the log of a refusal cilium/ebpf reports without one
// (the kernel's EFAULT, as for "The sequence of 8193 jumps is too
// complex", an unbounded loop's usual end): the maps are created alone and
// the program loaded against them once more by bpfload.WithLog.
func (e *Env) refusalLog(spec *ebpf.CollectionSpec, err error) error {
	maps := spec.Copy()
	maps.Programs = nil
	coll, merr := ebpf.NewCollection(maps)
	if merr != nil {
		return err
	}
	defer coll.Close()
	ps := spec.Programs[e.lesson.Program].Copy()
	for i := range ps.Instructions {
		if m, ok := coll.Maps[ps.Instructions[i].Reference()]; ok {
			if aerr := ps.Instructions[i].AssociateMap(m); aerr != nil {
				return err
			}
		}
	}
	return bpfload.WithLog(ps, err)
}

func (e *Env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	if e.coll != nil {
		e.coll.Close()
	}
}

// Short says to keep traffic small.
func (e *Env) Short() bool { return e.short }

// Map returns one of the program's maps, or an error naming it.
func (e *Env) Map(name string) (*ebpf.Map, error) {
	m, ok := e.coll.Maps[name]
	if !ok {
		return nil, fmt.Errorf("your program has no map %q: keep the starter's maps and their names", name)
	}
	return m, nil
}
