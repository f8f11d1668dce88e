package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/report"
	"github.com/xdplab/xdplab/lab/verifier"
)

func init() {
	register(command{name: "verifier", summary: "the verifier ledger: instructions, states and headroom per program and kernel", run: verifierTable})
	register(command{name: "verifier update", summary: "refresh the verifier ledger from matrix reports (REPORTDIR...) and print what changed", run: verifierUpdate})
	register(command{name: "verifier diff", summary: "what matrix reports (REPORTDIR...) change against the ledger: verifier, features, limits (after lab kernels pin)", run: verifierDiff})
}

// ledgerFlag adds -ledger; loadLedger reads the file it names: the
// repository's tests/ledger.json by default.
func ledgerFlag(fs *flag.FlagSet) *string {
	return fs.String("ledger", "", "ledger file (default: tests/ledger.json of the repository around the working directory)")
}

func loadLedger(p string) (string, *verifier.Ledger, error) {
	if p == "" {
		var err error
		if p, err = findRepoFile(filepath.Join("tests", "ledger.json")); err != nil {
			return "", nil, err
		}
	}
	l, err := verifier.Load(p)
	return p, l, err
}

func verifierTable(args []string) error {
	fs := newFlags("verifier")
	ledger := ledgerFlag(fs)
	kernel := fs.String("kernel", "", "only this kernel's column")
	asJSON := fs.Bool("json", false, "print the ledger's rows as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path, l, err := loadLedger(*ledger)
	if err != nil {
		return err
	}
	if *asJSON {
		rows := l.Rows[:0:0]
		for _, r := range l.Rows {
			if *kernel == "" || r.Kernel == *kernel {
				rows = append(rows, r)
			}
		}
		b, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		fmt.Println(string(b))
		return nil
	}
	var ks []string
	if *kernel != "" {
		ks = []string{*kernel}
	}
	fmt.Print(l.Table(ks))
	fmt.Printf("\nlimit %d instructions; a run fails past +%.0f%% growth or under %.0f%% headroom (%s)\n", verifier.InsnLimit, 100*l.Tolerance, 100*l.MinHeadroom, path)
	return nil
}

// verifierUpdate rewrites the ledger's rows and facts for every kernel the
// reports ran (as make test or CI's report job leaves them) and prints the
// diff: a ledger changes only on purpose, and its diff is what a reviewer
// reads.
func verifierUpdate(args []string) error {
	path, l, diff, err := ledgerAgainst("verifier update", args)
	if err != nil {
		return err
	}
	if err := l.Save(path); err != nil {
		return err
	}
	if len(diff) == 0 {
		fmt.Printf("%s: no change\n", path)
		return nil
	}
	fmt.Printf("%s:\n  %s\nreview with 'git diff %s' and commit\n", path, strings.Join(diff, "\n  "), path)
	return nil
}

// verifierDiff prints what the reports' kernels changed against the
// ledger, writing nothing: after 'lab kernels pin' moves a kernel to a new
// build, what the new build does to the programs' verification, features
// and limits.
func verifierDiff(args []string) error {
	path, _, diff, err := ledgerAgainst("verifier diff", args)
	if err != nil {
		return err
	}
	if len(diff) == 0 {
		fmt.Printf("no difference from %s\n", path)
		return nil
	}
	fmt.Printf("against %s:\n  %s\n", path, strings.Join(diff, "\n  "))
	return nil
}

// ledgerAgainst reads the ledger and applies the reports named in args to
// it, returning the changes.
func ledgerAgainst(name string, args []string) (string, *verifier.Ledger, []string, error) {
	fs := newFlags(name)
	ledger := ledgerFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return "", nil, nil, err
	}
	if fs.NArg() == 0 {
		return "", nil, nil, usageError{"usage: lab " + name + " [-ledger FILE] REPORTDIR...  (directories holding a matrix report.json, e.g. results/ or results/6.1)"}
	}
	path, l, err := loadLedger(*ledger)
	if err != nil {
		return "", nil, nil, err
	}
	var diff []string
	for _, d := range fs.Args() {
		r, err := report.Read(d)
		if err != nil {
			return "", nil, nil, err
		}
		for _, k := range r.Kernels {
			if len(k.Verifier) > 0 {
				var st []bpfload.ProgramStats
				if err := json.Unmarshal(k.Verifier, &st); err != nil {
					return "", nil, nil, fmt.Errorf("%s: kernel %s: %w", d, k.Kernel, err)
				}
				diff = append(diff, l.Update(k.Kernel, k.Release, st)...)
			}
			diff = append(diff, l.UpdateFacts(verifier.Facts{Kernel: k.Kernel, Release: k.Release, Features: k.Features, Limits: k.Limits})...)
		}
	}
	return path, l, diff, nil
}
