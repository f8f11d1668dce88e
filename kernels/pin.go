package kernels

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// PinResult says what Pin changed for one entry.
type PinResult struct {
	Name     string
	Old, New string // release + first package version
}

// Pin refreshes the named kernels (all when names is empty) and the tools to
// the newest builds their suites serve now, with versions, sizes and sha256
// read from the mirror's signed Packages indexes, and rewrites path
// (kernels/kernels.json) for review.
func Pin(ctx context.Context, path string, names []string, log io.Writer) ([]PinResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := parseMatrix(b)
	if err != nil {
		return nil, err
	}
	apt, err := NewApt()
	if err != nil {
		return nil, err
	}
	apt.Log = log
	if err := apt.Update(ctx); err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range names {
		if _, err := m.Lookup(n); err != nil || n == HostName {
			return nil, fmt.Errorf("cannot pin %q: not a pinned kernel (%s)", n, strings.Join(m.Names(), ", "))
		}
		want[n] = true
	}
	indexes := map[string][]stanza{}
	index := func(suite string) ([]stanza, error) {
		if idx, ok := indexes[suite]; ok {
			return idx, nil
		}
		idx, err := apt.Index(ctx, suite)
		indexes[suite] = idx
		return idx, err
	}
	var res []PinResult
	for i := range m.Kernels {
		k := &m.Kernels[i]
		if len(want) > 0 && !want[k.Name] {
			continue
		}
		idx, err := index(k.Suite)
		if err != nil {
			return nil, err
		}
		old := describe(k)
		if err := pinKernel(k, idx); err != nil {
			return nil, err
		}
		res = append(res, PinResult{Name: k.Name, Old: old, New: describe(k)})
	}
	if len(want) == 0 {
		for _, n := range sortedToolNames(m.Tools) {
			t := m.Tools[n]
			idx, err := index(t.Suite)
			if err != nil {
				return nil, err
			}
			s, ok := newest(idx, regexp.MustCompile("^"+regexp.QuoteMeta(t.Name)+"$"))[t.Name]
			if !ok {
				return nil, fmt.Errorf("tool %s: not in %s", t.Name, t.Suite)
			}
			old := t.Version
			t.Package, err = packageOf(s)
			if err != nil {
				return nil, err
			}
			m.Tools[n] = t
			res = append(res, PinResult{Name: n, Old: old, New: t.Version})
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return res, os.WriteFile(path, buf.Bytes(), 0o644)
}

func describe(k *Kernel) string {
	if len(k.Packages) == 0 {
		return k.Release
	}
	return k.Release + " " + k.Packages[0].Version
}

// pinKernel picks the newest release matching k.Track in the suite's index.
func pinKernel(k *Kernel, idx []stanza) error {
	if len(k.Track.Packages) == 0 || k.Track.Release == "" {
		return fmt.Errorf("kernel %s: no track rule in kernels.json", k.Name)
	}
	relRe := strings.TrimSuffix(strings.TrimPrefix(k.Track.Release, "^"), "$")
	first := regexp.QuoteMeta(k.Track.Packages[0])
	first = strings.Replace(first, regexp.QuoteMeta("{release}"), "("+relRe+")", 1)
	re, err := regexp.Compile("^" + first + "$")
	if err != nil {
		return fmt.Errorf("kernel %s: track rule: %w", k.Name, err)
	}
	var best stanza
	bestRel := ""
	for _, s := range newest(idx, re) {
		if best == nil || compareVersions(s["Version"], best["Version"]) > 0 ||
			(s["Version"] == best["Version"] && re.FindStringSubmatch(s["Package"])[1] > bestRel) {
			best, bestRel = s, re.FindStringSubmatch(s["Package"])[1]
		}
	}
	if best == nil {
		return fmt.Errorf("kernel %s: no package matching %s in %s", k.Name, re, k.Suite)
	}
	var pkgs []Package
	for _, tmpl := range k.Track.Packages {
		name := strings.ReplaceAll(tmpl, "{release}", bestRel)
		s, ok := newest(idx, regexp.MustCompile("^"+regexp.QuoteMeta(name)+"$"))[name]
		if !ok {
			return fmt.Errorf("kernel %s: %s not in %s", k.Name, name, k.Suite)
		}
		p, err := packageOf(s)
		if err != nil {
			return err
		}
		pkgs = append(pkgs, p)
	}
	k.Release, k.Packages = bestRel, pkgs
	return nil
}

func packageOf(s stanza) (Package, error) {
	size, _ := strconv.ParseInt(s["Size"], 10, 64)
	p := Package{Name: s["Package"], Version: s["Version"], SHA256: s["SHA256"], Size: size}
	if len(p.SHA256) != 64 {
		return p, fmt.Errorf("%s %s: no SHA256 in the index", p.Name, p.Version)
	}
	return p, nil
}
