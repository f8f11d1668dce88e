package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/xdplab/xdplab/kernels"
	"github.com/xdplab/xdplab/vmtest"
)

func init() {
	register(command{name: "kernels list", summary: "list the pinned kernels and whether they are cached", run: kernelsList})
	register(command{name: "kernels fetch", summary: "download, verify and unpack kernels (all, or NAME...)", run: kernelsFetch})
	register(command{name: "kernels pin", summary: "refresh kernels/kernels.json from the mirror (all, or NAME...)", run: kernelsPin})
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func kernelsList(args []string) error {
	fs := newFlags("kernels list")
	asJSON := fs.Bool("json", false, "print CI's kernel matrix as one JSON array (name, release, backend, job, cache_key, cache_dir)")
	names := fs.Bool("names", false, "print only the pinned kernels' names, one per line (for scripts)")
	jobs := fs.Bool("jobs", false, "print CI's kernel jobs, one per line as make test-kernel's arguments (KERNEL=NAME BACKEND=B)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	m, err := kernels.Pinned()
	if err != nil {
		return err
	}
	switch {
	case *asJSON:
		return kernelsJSON(m)
	case *names:
		fmt.Println(strings.Join(m.Names(), "\n"))
		return nil
	case *jobs:
		for _, j := range ciJobs(m) {
			fmt.Printf("KERNEL=%s BACKEND=%s\n", j.Name, j.Backend)
		}
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSUITE\tRELEASE\tVERSION\tCACHED\tSIZE")
	for _, name := range m.Names() {
		k, _ := m.Lookup(name)
		ver := ""
		if len(k.Packages) > 0 {
			ver = k.Packages[0].Version
		}
		cached, size := "no", fmt.Sprintf("%d MB download", k.DownloadSize()>>20)
		if k.Cached() {
			cached, size = "yes", fmt.Sprintf("%d MB", k.DiskSize()>>20)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Suite, k.Release, ver, cached, size)
	}
	h := kernels.Host()
	fmt.Fprintf(w, "%s\t-\t%s\t-\t(running)\t-\n", h.Name, h.Release)
	w.Flush()
	fmt.Printf("cache: %s\n", kernels.CacheDir())
	return nil
}

func kernelsFetch(args []string) error {
	fs := newFlags("kernels fetch")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	m, err := kernels.Pinned()
	if err != nil {
		return err
	}
	names := fs.Args()
	if len(names) == 0 {
		names = m.Names()
	}
	ctx, cancel := signalContext()
	defer cancel()
	for _, n := range names {
		k, err := m.Lookup(n)
		if err != nil {
			return err
		}
		if k.Cached() {
			fmt.Printf("%s: cached in %s\n", k.Name, k.Dir())
			continue
		}
		if err := k.Fetch(ctx, &kernels.Options{Log: os.Stdout}); err != nil {
			return err
		}
	}
	return nil
}

// kernelsPin rewrites the kernels.json of the source tree (found from the
// working directory), since the one compiled in is read-only.
func kernelsPin(args []string) error {
	fs := newFlags("kernels pin")
	file := fs.String("file", "", "kernels.json to rewrite (default: kernels/kernels.json of the repository around the working directory)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := *file
	if path == "" {
		p, err := findRepoFile(filepath.Join("kernels", "kernels.json"))
		if err != nil {
			return err
		}
		path = p
	}
	ctx, cancel := signalContext()
	defer cancel()
	res, err := kernels.Pin(ctx, path, fs.Args(), nil)
	if err != nil {
		return err
	}
	var moved []string
	for _, r := range res {
		state := "unchanged"
		if r.Old != r.New {
			state = "was " + r.Old
			moved = append(moved, r.Name)
		}
		fmt.Printf("%-10s %s (%s)\n", r.Name, r.New, state)
	}
	fmt.Printf("wrote %s: review with 'git diff', rebuild lab, commit\n", path)
	// A new build can change what the verifier accepts and which features
	// the programs find: show it before the ledger takes it.
	for _, k := range moved {
		fmt.Printf("%s: what its new build changes: make test-kernel KERNEL=%s && bin/lab verifier diff results/%s (then lab verifier update results/%s)\n", k, k, k, k)
	}
	return nil
}

func findRepoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s above the working directory; run from the repository or pass -file", rel)
		}
		dir = parent
	}
}

// ciJob is one job of CI's kernel matrix. The workflow reads the list from
// here at run time, so a kernel added to kernels.json is a new CI job with
// no edit to the workflow.
type ciJob struct {
	Name     string `json:"name"`
	Release  string `json:"release"`
	Backend  string `json:"backend"`   // how the guest boots: direct or vng
	Job      string `json:"job"`       // the job's results directory and artifact name (KERNEL-BACKEND off the direct path, as make test-kernel names it)
	CacheKey string `json:"cache_key"` // changes exactly when a pinned package does
	CacheDir string `json:"cache_dir"` // the kernel's directory under the kernel cache
}

// ciJobs is every pinned kernel on the direct path, and the newest one
// again through virtme-ng, so every CI run boots the reference path too.
func ciJobs(m *kernels.Matrix) []ciJob {
	var jobs []ciJob
	names := m.Names()
	for i, name := range names {
		k, _ := m.Lookup(name)
		j := ciJob{Name: k.Name, Release: k.Release, Backend: string(vmtest.Direct), Job: k.Name, CacheKey: k.CacheKey(), CacheDir: k.CacheName()}
		jobs = append(jobs, j)
		if i == len(names)-1 {
			j.Backend, j.Job = string(vmtest.VNG), k.Name+"-"+string(vmtest.VNG)
			jobs = append(jobs, j)
		}
	}
	return jobs
}

func kernelsJSON(m *kernels.Matrix) error {
	b, err := json.Marshal(ciJobs(m))
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}
