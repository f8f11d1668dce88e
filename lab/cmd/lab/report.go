package main

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-multierror"
	"github.com/xdplab/xdplab/kernels"
	"github.com/xdplab/xdplab/lab/report"
)

func init() {
	register(command{name: "report merge", summary: "merge per-kernel matrix reports (DIR...) into one; fails if any kernel failed", run: reportMerge})
}

// reportMerge joins the reports of a sharded matrix run (one directory per
// kernel, as CI's jobs upload them) into the report a whole run writes, and
// fails when a kernel failed or, with -expect/-pinned, has no report.
func reportMerge(args []string) error {
	fs := newFlags("report merge")
	out := fs.String("o", "", "directory for the merged report.md, report.json and junit.xml (required)")
	expect := fs.String("expect", "", "comma-separated kernels that must have a report")
	pinned := fs.Bool("pinned", false, "every pinned kernel must have a report (as -expect with all of kernels.json)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		return usageError{"usage: lab report merge -o DIR [-pinned | -expect K1,K2] REPORTDIR..."}
	}
	var want []string
	if *expect != "" {
		want = strings.Split(*expect, ",")
	}
	if *pinned {
		m, err := kernels.Pinned()
		if err != nil {
			return err
		}
		want = m.Names()
	}
	var rs []*report.Report
	var errs error
	for _, d := range fs.Args() {
		r, err := report.Read(d)
		if err != nil {
			// A shard without a report is a job that died early; say so,
			// and merge the rest so their results are still read.
			errs = multierror.Append(errs, fmt.Errorf("no report in %s: %w", d, err))
			continue
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return oneLine(multierror.Append(errs, fmt.Errorf("no report to merge")))
	}
	m, err := report.Merge(rs...)
	if err != nil {
		return err
	}
	if err := m.Write(*out); err != nil {
		return err
	}
	fmt.Print(m.Markdown())
	fmt.Printf("\nmerged %d kernel(s) into %s\n", len(m.Kernels), *out)
	for _, f := range m.Failures() {
		errs = multierror.Append(errs, fmt.Errorf("kernel %s", f))
	}
	for _, k := range m.Missing(want) {
		errs = multierror.Append(errs, fmt.Errorf("kernel %s: no report (its job failed before writing one?)", k))
	}
	if errs != nil {
		return oneLine(errs)
	}
	return nil
}

// oneLine flattens a multierror into "a; b; c" for lab's one-line errors.
func oneLine(err error) error {
	if me, ok := err.(*multierror.Error); ok {
		me.ErrorFormat = func(es []error) string {
			var s []string
			for _, e := range es {
				s = append(s, e.Error())
			}
			return strings.Join(s, "; ")
		}
		return me
	}
	return err
}
