package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/xdplab/xdplab/lab/workshop"
	"github.com/xdplab/xdplab/vmtest"
)

func init() {
	register(command{name: "workshop list", summary: "the XDP workshop's lessons, and which you have started", run: workshopList})
	register(command{name: "workshop start", summary: "copy lesson N's starter into your working directory: workshop start N [--dir DIR]", run: workshopStart})
	register(command{name: "workshop check", summary: "build, load and test your lesson N: workshop check N [--dir DIR] [--solution] [--kernel K]", run: workshopCheck})
	register(command{name: "workshop hint", summary: "hints for lesson N, one per check", run: workshopHint})
}

// parseLesson parses fs's flags and the one argument, a lesson number or
// slug; flags may come before or after it, as people type them both ways.
func parseLesson(fs *flag.FlagSet, args []string) (*workshop.Lesson, error) {
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, usageError{fmt.Sprintf("usage: %s N [flags] (lab workshop list shows the lessons)", fs.Name())}
	}
	n := rest[0]
	if err := parseFlags(fs, rest[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Sprintf("%s takes one lesson, got %q too", fs.Name(), fs.Args())}
	}
	l, err := workshop.Lookup(n)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return l, nil
}

func workshopList(args []string) error {
	fs := newFlags("workshop list")
	dir := fs.String("dir", workshop.DefaultDir, "your working directory")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, l := range workshop.Lessons() {
		state := ""
		if _, err := os.Stat(l.Source(*dir)); err == nil {
			state = "  (started: " + l.Source(*dir) + ")"
		}
		fmt.Printf("%2d  %-8s %s%s\n", l.N, l.Slug, l.Title, state)
	}
	fmt.Printf("\nlab workshop start N copies a lesson's starter and README into %s/; each README teaches the lesson.\n", *dir)
	return nil
}

func workshopStart(args []string) error {
	fs := newFlags("workshop start")
	dir := fs.String("dir", workshop.DefaultDir, "your working directory (created)")
	force := fs.Bool("force", false, "overwrite your edited lesson file with the starter")
	l, err := parseLesson(fs, args)
	if err != nil {
		return err
	}
	src, err := l.Start(*dir, *force)
	if errors.Is(err, workshop.ErrEdited) {
		return usageError{err.Error()}
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s\n  read   %s\n  edit   %s\n  check  sudo lab workshop check %d%s\n",
		l, filepath.Join(filepath.Dir(src), workshop.ReadmeFile), src, l.N, dirFlag(*dir))
	return nil
}

// dirFlag repeats --dir in a suggested command when it is not the default.
func dirFlag(dir string) string {
	if dir == workshop.DefaultDir {
		return ""
	}
	return " --dir " + dir
}

func workshopHint(args []string) error {
	fs := newFlags("workshop hint")
	l, err := parseLesson(fs, args)
	if err != nil {
		return err
	}
	fmt.Printf("%s: hints, one per check, in the order the checker runs them\n", l)
	for _, c := range l.Checks {
		if c.Hint != "" {
			fmt.Printf("\n  %s\n    %s\n", c.Name, c.Hint)
		}
	}
	fmt.Printf("\nThe lesson's README (lab workshop start %d copies it) explains the why.\n", l.N)
	return nil
}

func workshopCheck(args []string) error {
	fs := newFlags("workshop check")
	dir := fs.String("dir", workshop.DefaultDir, "your working directory")
	solution := fs.Bool("solution", false, "check the reference solution instead of your file")
	kernel := fs.String("kernel", "", "check inside a pinned kernel's VM ("+kernelNames()+"); the C is built on this machine")
	short := fs.Bool("short", false, "less traffic (for slow, emulated VMs)")
	object := fs.String("object", "", "check this built object instead of building (what --kernel runs in the guest)")
	l, err := parseLesson(fs, args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return usageError{"lab workshop check loads BPF and builds namespaces: run it with sudo"}
	}
	o := workshop.Options{Source: l.Source(*dir), Object: *object, Short: *short, Out: os.Stdout}
	if *solution && *object == "" {
		tmp, err := os.MkdirTemp("", "workshop-solution-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if o.Source, err = writeLessonFile(l, workshop.SolutionFile, tmp); err != nil {
			return err
		}
	} else if *object == "" {
		if _, err := os.Stat(o.Source); err != nil {
			return usageError{fmt.Sprintf("no %s: run 'lab workshop start %d%s' first (or --solution to check the reference)", o.Source, l.N, dirFlag(*dir))}
		}
	}
	ctx, cancel := signalContext()
	defer cancel()
	what := o.Source
	if *object != "" {
		what = *object
	}
	fmt.Printf("%s\nchecking %s on Linux %s\n", l, what, kernelRelease())
	if *kernel != "" {
		return checkInKernel(ctx, l, *kernel, o)
	}
	r, err := l.Check(ctx, o)
	if err != nil {
		return err
	}
	return checkSummary(r)
}

// checkSummary ends a check with one line, and exit status 1 on failure.
func checkSummary(r *workshop.Report) error {
	pass, skips := 0, 0
	for _, res := range r.Results {
		switch {
		case res.Skip != "":
			skips++
		case res.Err == nil:
			pass++
		}
	}
	skipped := ""
	if skips > 0 {
		skipped = fmt.Sprintf(", %d skipped (see why above)", skips)
	}
	if f := r.FirstFailure(); f != nil {
		fmt.Printf("\n%d of %d checks pass; fix %q first (%.1fs)\n", pass, len(r.Results)+len(r.NotRun), f.Name, r.Took.Seconds())
		return exitError{1}
	}
	fmt.Printf("\nall %d checks pass%s (%.1fs)", pass, skipped, r.Took.Seconds())
	if r.Lesson.N < len(workshop.Lessons()) {
		fmt.Printf(": on to lesson %d (lab workshop start %d)", r.Lesson.N+1, r.Lesson.N+1)
	}
	fmt.Println()
	return nil
}

func writeLessonFile(l *workshop.Lesson, name, dir string) (string, error) {
	b, err := l.File(name)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, b, 0o644)
}

// checkInKernel builds on the host (the guest has the same clang, but
// building once here is faster than under emulation) and runs this binary's
// check of the object in the kernel's VM, whose output and status it
// passes on.
func checkInKernel(ctx context.Context, l *workshop.Lesson, name string, o workshop.Options) error {
	k, err := lookupCached(name)
	if err != nil {
		return err
	}
	if o.Object == "" {
		// The results directory is the one host directory a guest
		// surely sees at its own path.
		o.ObjectDir, err = os.MkdirTemp("", "workshop-obj-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(o.ObjectDir)
		o.BuildOnly = true
		r, err := l.Check(ctx, o)
		if err != nil {
			return err
		}
		if r.FirstFailure() != nil {
			return checkSummary(r)
		}
		o.Object = r.Object
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := []string{exe, "workshop", "check", fmt.Sprint(l.N), "--object", o.Object}
	if o.Short {
		cmd = append(cmd, "--short")
	}
	fmt.Printf("booting %s (%s) to check there...\n", k.Name, k.Release)
	res, err := vmtest.Run(ctx, k, cmd, vmtest.Options{
		CPUs: 2, ResultsDir: filepath.Dir(o.Object), Stdout: os.Stdout, Stderr: os.Stderr,
	})
	if err != nil {
		if res != nil && res.KernelLog != "" {
			fmt.Fprintf(os.Stderr, "---- guest kernel log, last lines (%s, %s) ----\n%s\n", res.Kernel, res.Accel, res.KernelLogTail(30))
		}
		return err
	}
	fmt.Printf("(%s guest, %s, %.1fs with boot)\n", k.Name, res.Accel, res.Duration.Seconds())
	if res.ExitCode != 0 {
		return exitError{res.ExitCode}
	}
	return nil
}

// kernelRelease is uname -r: in a guest, which kernel the check runs on.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}
