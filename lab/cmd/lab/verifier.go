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

// verifierUpdate rewrites the ledger's rows for every kernel the reports
// ran (as make test or CI's report job leaves them) and prints the diff:
// a ledger changes only on purpose, and its diff is what a reviewer reads.
func verifierUpdate(args []string) error {
	fs := newFlags("verifier update")
	ledger := ledgerFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"usage: lab verifier update [-ledger FILE] REPORTDIR...  (directories holding a matrix report.json, e.g. results/)"}
	}
	path, l, err := loadLedger(*ledger)
	if err != nil {
		return err
	}
	var diff []string
	for _, d := range fs.Args() {
		r, err := report.Read(d)
		if err != nil {
			return err
		}
		for _, k := range r.Kernels {
			if len(k.Verifier) == 0 {
				continue
			}
			var st []bpfload.ProgramStats
			if err := json.Unmarshal(k.Verifier, &st); err != nil {
				return fmt.Errorf("%s: kernel %s: %w", d, k.Kernel, err)
			}
			diff = append(diff, l.Update(k.Kernel, k.Release, st)...)
		}
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
