package tests

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestWorkflow checks .github/workflows against the repository: actionlint
// (with shellcheck) passes, the kernel matrix is the pinned list read at run
// time, and every `make` target CI runs is one the README documents and
// .ci/run reaches. The mutations prove each check can fail.
func TestWorkflow(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		// Without it actionlint skips run: scripts silently.
		t.Fatal("shellcheck not found: run 'make deps'")
	}
	r := &ciRepo{root: moduleRoot(t)} // matrix_test.go: from go env GOMOD
	wfDir := filepath.Join(r.root, ".github", "workflows")
	base := r.check(wfDir)
	for _, p := range base {
		t.Error(p)
	}

	names := r.pinnedNames(t)
	hardList := `["` + strings.Join(names, `", "`) + `"]`
	for _, m := range []struct{ name, old, new, want string }{
		{"hard-coded matrix", "${{ fromJSON(needs.kernels.outputs.matrix) }}", hardList, "want ${{ fromJSON("},
		{"hard-coded kernel", `make test-kernel KERNEL="$KERNEL"`, "make test-kernel KERNEL=" + names[0], `pinned kernel "` + names[0] + `" is hard-coded`},
		{"matrix field typo", "name: report-${{ matrix.kernel.job }}", "name: report-${{ matrix.kernel.jb }}", `has no field "jb"`},
		{"undefined needs output", "needs.kernels.outputs.matrix)", "needs.kernels.outputs.matrixx)", `"matrixx" is not defined`},
		{"undefined job", "needs: kernels\n", "needs: kernelz\n", "kernelz"},
		{"cache key", "key: ${{ matrix.kernel.cache_key }}", "key: ${{ matrix.kernel.release }}", "cache key is"},
		{"missing make target", "run: make vet\n", "run: make vett\n", `"vett", which the Makefile does not define`},
		{"target outside .ci/run", "run: make vet\n", "run: make bench\n", `"bench", which .ci/run does not reach`},
		{"test-kernel env", "KERNEL: ${{ matrix.kernel.name }}\n          BACKEND: ${{ matrix.kernel.backend }}\n        run: make test-kernel", "KERNEL: ${{ matrix.kernel.release }}\n          BACKEND: ${{ matrix.kernel.backend }}\n        run: make test-kernel", `env KERNEL is "${{ matrix.kernel.release }}"`},
		{"test-kernel backend", "BACKEND: ${{ matrix.kernel.backend }}\n        run: make test-kernel", "BACKEND: vng\n        run: make test-kernel", `env BACKEND is "vng"`},
		{"shell error", `cat "results/$JOB/report.md"`, "cat results/$JOB/report.md", "SC2086"},
	} {
		t.Run("mutation/"+m.name, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(wfDir, "ci.yml"))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(string(src), m.old) != 1 {
				t.Fatalf("ci.yml has no single %q to mutate; update the mutation", m.old)
			}
			if slices.ContainsFunc(base, func(p string) bool { return strings.Contains(p, m.want) }) {
				t.Fatalf("the real workflow already reports %q; the mutation proves nothing", m.want)
			}
			dir := filepath.Join(t.TempDir(), ".github", "workflows")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			mut := strings.Replace(string(src), m.old, m.new, 1)
			if err := os.WriteFile(filepath.Join(dir, "ci.yml"), []byte(mut), 0o644); err != nil {
				t.Fatal(err)
			}
			probs := r.check(dir)
			t.Log(strings.Join(probs, "\n"))
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, m.want) }) {
				t.Errorf("mutation not detected: want a problem containing %q, got:\n%s", m.want, strings.Join(probs, "\n"))
			}
		})
	}
}

// ciRepo holds what workflows are checked against: the Makefile, README.md,
// .ci/run and the pinned kernels under root.
type ciRepo struct {
	root string
	runs map[string]cmdResult // `kernels list` output by package, run once
}

type cmdResult struct {
	out []byte
	err error
}

type ghWorkflow struct {
	Jobs map[string]ghJob `yaml:"jobs"`
}

type ghJob struct {
	Outputs  map[string]string `yaml:"outputs"`
	Strategy struct {
		Matrix map[string]any `yaml:"matrix"`
	} `yaml:"strategy"`
	Steps []ghStep `yaml:"steps"`
}

type ghStep struct {
	ID   string            `yaml:"id"`
	Uses string            `yaml:"uses"`
	Run  string            `yaml:"run"`
	With map[string]string `yaml:"with"`
	Env  map[string]string `yaml:"env"`
}

var (
	reFromJSON  = regexp.MustCompile(`^\$\{\{\s*fromJSON\(\s*needs\.([\w-]+)\.outputs\.([\w-]+)\s*\)\s*\}\}$`)
	reStepOut   = regexp.MustCompile(`^\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}$`)
	reListCmd   = regexp.MustCompile(`\bgo run (\S+) kernels list --json\b`)
	reField     = regexp.MustCompile(`\bmatrix\.kernel\.([\w-]+)`)
	reTestKern  = regexp.MustCompile(`\bmake test-kernel\s+KERNEL="?\$\{?(\w+)\}?"?(?:\s+BACKEND="?\$\{?(\w+)\}?"?)?`)
	reShellCmds = regexp.MustCompile(`&&|\|\||[;|\n(){}]`)
	reComment   = regexp.MustCompile(`(?m)(^|\s)#.*$`)
)

// check returns every problem with the workflows in dir, one line each
// (actionlint's findings as it prints them).
func (r *ciRepo) check(dir string) []string {
	var probs []string
	bad := func(f string, a ...any) { probs = append(probs, fmt.Sprintf(f, a...)) }

	files, _ := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if len(files) == 0 {
		return []string{"no workflows in " + dir}
	}
	lint := exec.Command("go", append([]string{"tool", "actionlint", "-oneline"}, files...)...)
	lint.Dir = r.root
	if out, err := lint.CombinedOutput(); err != nil {
		if len(out) == 0 {
			bad("actionlint: %v", err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			bad("actionlint: %s", l)
		}
	}

	// Every `make TARGET` a step runs, in any workflow.
	targets := map[string]bool{}
	found := false
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			bad("%v", err)
			continue
		}
		var w ghWorkflow
		if err := yaml.Unmarshal(src, &w); err != nil {
			bad("%s: %v", f, err)
			continue
		}
		for _, j := range w.Jobs {
			for _, s := range j.Steps {
				for _, tg := range makeTargets(s.Run) {
					targets[tg] = true
				}
			}
		}
		if filepath.Base(f) == "ci.yml" {
			found = true
			r.checkMatrix(string(src), w, bad)
		}
	}
	if !found {
		bad("%s: no ci.yml", dir)
	}
	r.checkTargets(targets, bad)
	return probs
}

// checkMatrix checks that the kernel job's matrix is read at run time from
// `lab kernels list --json`, which lists exactly kernels.json's kernels.
func (r *ciRepo) checkMatrix(src string, w ghWorkflow, bad func(string, ...any)) {
	var kj *ghJob
	for _, j := range w.Jobs {
		if _, ok := j.Strategy.Matrix["kernel"]; ok {
			if kj != nil {
				bad("more than one job has a kernel matrix")
			}
			kj = &j
		}
	}
	if kj == nil {
		bad("no job has strategy.matrix.kernel")
		return
	}

	// The matrix list must not be hard-coded, nor any kernel anywhere.
	pinned, err := r.pinned()
	if err != nil {
		bad("%v", err)
		return
	}
	for _, k := range pinned {
		for _, s := range []string{k.Name, k.Release} {
			if regexp.MustCompile(`(^|[^\w.+])` + regexp.QuoteMeta(s) + `($|[^\w.+])`).MatchString(src) {
				bad("pinned kernel %q is hard-coded in the workflow; take it from the matrix", s)
			}
		}
	}

	m := reFromJSON.FindStringSubmatch(fmt.Sprint(kj.Strategy.Matrix["kernel"]))
	if m == nil {
		bad("matrix.kernel is %q, want ${{ fromJSON(needs.JOB.outputs.OUT) }}", fmt.Sprint(kj.Strategy.Matrix["kernel"]))
		return
	}
	lj, ok := w.Jobs[m[1]]
	if !ok {
		bad("matrix.kernel reads job %q, which does not exist", m[1])
		return
	}
	so := reStepOut.FindStringSubmatch(lj.Outputs[m[2]])
	if so == nil {
		bad("job %s output %q is %q, want ${{ steps.ID.outputs.OUT }}", m[1], m[2], lj.Outputs[m[2]])
		return
	}
	var run string
	for _, s := range lj.Steps {
		if s.ID == so[1] {
			run = s.Run
		}
	}
	c := reListCmd.FindStringSubmatch(run)
	if c == nil || !strings.Contains(run, so[2]+"=") || !strings.Contains(run, "GITHUB_OUTPUT") {
		bad("step %s.%s must write %s=$(go run ./lab/cmd/lab kernels list --json) to $GITHUB_OUTPUT, runs %q", m[1], so[1], so[2], run)
		return
	}
	out, err := r.kernelsList(c[1])
	if err != nil {
		bad("go run %s kernels list --json: %v", c[1], err)
		return
	}
	var list []map[string]any
	if err := json.Unmarshal(out, &list); err != nil {
		bad("kernels list --json: %v", err)
		return
	}
	// One job per pinned kernel on the direct path, and at least one
	// through virtme-ng, the reference path.
	var got, want []string
	vng := false
	for _, k := range list {
		if k["backend"] == "direct" {
			got = append(got, fmt.Sprint(k["name"]))
		}
		vng = vng || k["backend"] == "vng"
		for _, f := range []string{"cache_key", "cache_dir"} {
			if v, ok := k[f].(string); ok && v != "" && strings.Contains(src, v) {
				bad("%s %q is hard-coded in the workflow; take it from the matrix", f, v)
			}
		}
	}
	for _, k := range pinned {
		want = append(want, k.Name)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		bad("kernels list --json runs %v on the direct path, kernels.json pins %v", got, want)
	}
	if !vng {
		bad("kernels list --json runs no kernel through vng")
	}
	// actionlint types a fromJSON matrix as any: check the fields here.
	for _, f := range reField.FindAllStringSubmatch(src, -1) {
		for _, k := range list {
			if _, ok := k[f[1]]; !ok {
				bad("matrix.kernel.%s: kernels list --json has no field %q", f[1], f[1])
				break
			}
		}
	}

	var cached, tested bool
	for _, s := range kj.Steps {
		if strings.HasPrefix(s.Uses, "actions/cache@") || strings.HasPrefix(s.Uses, "actions/cache/restore@") {
			cached = true
			if !regexp.MustCompile(`^\$\{\{\s*matrix\.kernel\.cache_key\s*\}\}$`).MatchString(s.With["key"]) {
				bad("cache key is %q, want ${{ matrix.kernel.cache_key }} (it hashes the pinned sha256s)", s.With["key"])
			}
		}
		if v := reTestKern.FindStringSubmatch(s.Run); v != nil {
			tested = true
			if !regexp.MustCompile(`^\$\{\{\s*matrix\.kernel\.name\s*\}\}$`).MatchString(s.Env[v[1]]) {
				bad("make test-kernel KERNEL=$%s: env %s is %q, want ${{ matrix.kernel.name }}", v[1], v[1], s.Env[v[1]])
			}
			if v[2] == "" {
				bad("make test-kernel without BACKEND=$VAR: the matrix's vng job would boot the direct path")
			} else if !regexp.MustCompile(`^\$\{\{\s*matrix\.kernel\.backend\s*\}\}$`).MatchString(s.Env[v[2]]) {
				bad("make test-kernel BACKEND=$%s: env %s is %q, want ${{ matrix.kernel.backend }}", v[2], v[2], s.Env[v[2]])
			}
		}
	}
	if !cached {
		bad("the kernel job restores no kernel cache (actions/cache or actions/cache/restore)")
	}
	if !tested {
		bad(`the kernel job runs no make test-kernel KERNEL="$VAR"`)
	}
}

// checkTargets checks that every target CI runs is a Makefile target the
// README names and that .ci/run reaches, so CI runs what a developer runs.
func (r *ciRepo) checkTargets(targets map[string]bool, bad func(string, ...any)) {
	rules, err := parseMakefile(filepath.Join(r.root, "Makefile"))
	if err != nil {
		bad("%v", err)
		return
	}
	readme, err := os.ReadFile(filepath.Join(r.root, "README.md"))
	if err != nil {
		bad("%v", err)
		return
	}
	ciRun, err := os.ReadFile(filepath.Join(r.root, ".ci", "run"))
	if err != nil {
		bad("%v", err)
		return
	}
	reached := map[string]bool{}
	var walk func(string)
	walk = func(tg string) {
		if reached[tg] {
			return
		}
		reached[tg] = true
		for _, d := range rules[tg] {
			walk(d)
		}
	}
	for _, tg := range makeTargets(string(ciRun)) {
		walk(tg)
	}
	for _, tg := range slices.Sorted(maps.Keys(targets)) {
		if _, ok := rules[tg]; !ok {
			bad("workflow runs make %q, which the Makefile does not define", tg)
			continue
		}
		if !regexp.MustCompile(`\bmake\s+` + regexp.QuoteMeta(tg) + "($|[\\s`'\"])").Match(readme) {
			bad("workflow runs make %q, which README.md does not name", tg)
		}
		if !reached[tg] {
			bad("workflow runs make %q, which .ci/run does not reach", tg)
		}
	}
}

// makeTargets returns the targets of each `make` command in a shell script:
// commands only, so `echo "... make x"` does not count.
func makeTargets(script string) []string {
	var out []string
	for _, cmd := range reShellCmds.Split(reComment.ReplaceAllString(script, ""), -1) {
		f := strings.Fields(cmd)
		for len(f) > 0 && slices.Contains([]string{"sudo", "then", "else", "do", "!", "time", "exec"}, f[0]) {
			f = f[1:]
		}
		if len(f) == 0 || f[0] != "make" {
			continue
		}
		out = append(out, argTargets(f[1:])...)
	}
	return out
}

// argTargets drops make's options and VAR=value from its arguments.
func argTargets(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-C" || a == "-f":
			i++
		case strings.HasPrefix(a, "-"), strings.ContainsAny(a, "=$#"):
		default:
			out = append(out, a)
		}
	}
	return out
}

// parseMakefile maps each target to the targets it reaches directly: its
// prerequisites and the targets of `$(MAKE) ...` in its recipe. It follows
// include lines (relative to the Makefile's directory).
func parseMakefile(path string) (map[string][]string, error) {
	rules := map[string][]string{}
	var parse func(string, bool) error
	parse = func(path string, optional bool) error {
		src, err := os.ReadFile(path)
		if err != nil {
			if optional && os.IsNotExist(err) {
				return nil
			}
			return err
		}
		var cur []string
		text := strings.ReplaceAll(string(src), "\\\n", " ")
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "\t") {
				for _, m := range regexp.MustCompile(`\$[({]MAKE[)}]([^;&|]*)`).FindAllStringSubmatch(l, -1) {
					for _, c := range cur {
						rules[c] = append(rules[c], argTargets(strings.Fields(m[1]))...)
					}
				}
				continue
			}
			l, _, _ = strings.Cut(l, "#")
			if strings.TrimSpace(l) == "" {
				continue // blank and comment lines do not end a recipe
			}
			if f := strings.Fields(l); len(f) == 2 && (f[0] == "include" || f[0] == "-include") {
				if err := parse(filepath.Join(filepath.Dir(path), f[1]), f[0] == "-include"); err != nil {
					return err
				}
				continue
			}
			i := strings.Index(l, ":")
			if i < 0 || strings.Contains(l[:i], "=") || strings.HasPrefix(l[i:], ":=") || strings.HasPrefix(l[i:], "::=") {
				cur = nil
				continue
			}
			cur = strings.Fields(l[:i])
			deps, _, _ := strings.Cut(strings.TrimLeft(l[i:], ":"), ";")
			deps, _, _ = strings.Cut(deps, "|")
			for _, c := range cur {
				rules[c] = append(rules[c], strings.Fields(deps)...)
			}
		}
		return nil
	}
	err := parse(path, false)
	return rules, err
}

type pinnedKernel struct {
	Name    string `json:"name"`
	Release string `json:"release"`
}

// pinned reads kernels/kernels.json itself, not through the code under test.
func (r *ciRepo) pinned() ([]pinnedKernel, error) {
	src, err := os.ReadFile(filepath.Join(r.root, "kernels", "kernels.json"))
	if err != nil {
		return nil, err
	}
	var f struct{ Kernels []pinnedKernel }
	if err := json.Unmarshal(src, &f); err != nil {
		return nil, fmt.Errorf("kernels.json: %w", err)
	}
	if len(f.Kernels) == 0 {
		return nil, fmt.Errorf("kernels.json pins no kernels")
	}
	return f.Kernels, nil
}

func (r *ciRepo) pinnedNames(t *testing.T) []string {
	ks, err := r.pinned()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range ks {
		names = append(names, k.Name)
	}
	return names
}

// kernelsList runs `go run PKG kernels list --json` once per PKG.
func (r *ciRepo) kernelsList(pkg string) ([]byte, error) {
	if res, ok := r.runs[pkg]; ok {
		return res.out, res.err
	}
	cmd := exec.Command("go", "run", pkg, "kernels", "list", "--json")
	cmd.Dir = r.root
	out, err := cmd.Output()
	if e, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(e.Stderr)))
	}
	if r.runs == nil {
		r.runs = map[string]cmdResult{}
	}
	r.runs[pkg] = cmdResult{out, err}
	return out, err
}
