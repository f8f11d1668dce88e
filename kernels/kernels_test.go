package kernels

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"6.1.176-1", "6.1.176-1", 0},
		{"6.1.176-1", "6.1.99-1", 1},
		{"1.0~rc1-1", "1.0-1", -1},
		{"1:0.1", "2.0", 1},
		{"7.2.13-1", "7.2.13-1+b1", -1},
		{"5.10.223-1", "5.10.226-1", -1},
		{"1.0a", "1.0", 1},
	} {
		if got := compareVersions(c.a, c.b); got != c.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestPinnedMatrix(t *testing.T) {
	m, err := Pinned()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.Names(), " "); got != "5.10 6.1 6.12 7.2" {
		t.Fatalf("matrix is %q", got)
	}
	hex := regexp.MustCompile(`^[0-9a-f]{64}$`)
	for _, k := range m.Kernels {
		if !regexp.MustCompile(k.Track.Release).MatchString(k.Release) {
			t.Errorf("%s: release %q does not match its track rule %q", k.Name, k.Release, k.Track.Release)
		}
		if !strings.HasPrefix(k.Release, k.Name+".") {
			t.Errorf("%s: release %q is not a %s kernel", k.Name, k.Release, k.Name)
		}
		if len(k.Packages) != len(k.Track.Packages) {
			t.Errorf("%s: %d packages pinned, track rule names %d", k.Name, len(k.Packages), len(k.Track.Packages))
		}
		for _, p := range k.Packages {
			if !hex.MatchString(p.SHA256) || p.Version == "" || p.Size == 0 {
				t.Errorf("%s: incomplete pin %+v", k.Name, p)
			}
		}
	}
	if vng := m.Tools["virtme-ng"]; !hex.MatchString(vng.SHA256) {
		t.Errorf("virtme-ng pin incomplete: %+v", vng)
	}
	h, err := m.Lookup(HostName)
	if err != nil || !h.IsHost() || h.Release == "" {
		t.Errorf("host entry: %+v, %v", h, err)
	}
	if _, err := m.Lookup("4.19"); err == nil || !strings.Contains(err.Error(), "5.10") {
		t.Errorf("unknown kernel error should list the matrix: %v", err)
	}
}

func TestCacheDirEnv(t *testing.T) {
	t.Setenv("XDPLAB_KERNEL_CACHE", "/x/y")
	if CacheDir() != "/x/y" {
		t.Fatal(CacheDir())
	}
	t.Setenv("XDPLAB_KERNEL_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/c")
	if CacheDir() != "/c/xdplab/kernels" {
		t.Fatal(CacheDir())
	}
}

// sharedNetCache is one temporary cache for all downloading tests, so the
// package lists are fetched once.
var sharedNetCache string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "xdplab-kernels-test-")
	if err != nil {
		panic(err)
	}
	sharedNetCache = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// netCache points the cache at a temporary directory for tests that
// download: they must not disturb the shared cache other tests boot from.
func netCache(t *testing.T) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that downloads from the Debian mirror")
	}
	t.Setenv("XDPLAB_KERNEL_CACHE", sharedNetCache)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func sidBase(t *testing.T) Package {
	k, err := Lookup("7.2")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range k.Packages {
		if strings.HasPrefix(p.Name, "linux-base-") {
			return p
		}
	}
	t.Fatal("no linux-base package pinned for 7.2")
	return Package{}
}

func debsUnder(dir string) []string {
	var debs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".deb") {
			debs = append(debs, p)
		}
		return nil
	})
	return debs
}

func TestChecksumMismatch(t *testing.T) {
	ctx := netCache(t)
	// A small package from a stable suite: sid's may vanish, trixie's stays.
	m, err := Pinned()
	if err != nil {
		t.Fatal(err)
	}
	vng := m.Tools["virtme-ng"]
	p := vng.Package
	p.SHA256 = strings.Repeat("0", 64)
	k := &Kernel{Name: "bad", Suite: vng.Suite, Release: "test", Packages: []Package{p}}
	err = k.Fetch(ctx, nil)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("want a checksum error, got %v", err)
	}
	if !strings.Contains(err.Error(), "deleted") {
		t.Errorf("error should say the download was deleted: %v", err)
	}
	if d := debsUnder(CacheDir()); len(d) > 0 {
		t.Errorf("download left behind: %v", d)
	}
	if k.Cached() {
		t.Error("kernel marked cached after a mismatch")
	}
}

func TestVanishedVersion(t *testing.T) {
	ctx := netCache(t)
	p := sidBase(t)
	p.Version = "0.0.1-1"
	k := &Kernel{Name: "7.2", Suite: "sid", Release: "7.2-test", Packages: []Package{p}}
	err := k.Fetch(ctx, nil)
	if !errors.Is(err, ErrVanished) {
		t.Fatalf("want ErrVanished, got %v", err)
	}
	if !strings.Contains(err.Error(), PinCommand+" 7.2") {
		t.Errorf("error should name %q: %v", PinCommand, err)
	}
}

// TestFetchAndRedoHalfUnpacked fetches the smallest kernel, then simulates a
// fetch killed half way (no marker, a file missing) and checks it is redone.
func TestFetchAndRedoHalfUnpacked(t *testing.T) {
	ctx := netCache(t)
	k, err := Lookup("5.10")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Fetch(ctx, &Options{Log: tlog{t}}); err != nil {
		t.Fatal(err)
	}
	if !k.Cached() {
		t.Fatal("not cached after fetch")
	}
	if _, err := os.Stat(k.Vmlinuz()); err != nil {
		t.Fatal(err)
	}
	var xz, ko int
	filepath.WalkDir(k.ModulesDir(), func(p string, d fs.DirEntry, err error) error {
		switch {
		case strings.HasSuffix(p, ".ko.xz"):
			xz++
		case strings.HasSuffix(p, ".ko"):
			ko++
		}
		return nil
	})
	if xz != 0 || ko < 100 {
		t.Errorf("modules: %d .ko, %d .ko.xz", ko, xz)
	}
	if b, err := os.ReadFile(filepath.Join(k.ModulesDir(), "modules.dep")); err != nil || !strings.Contains(string(b), "veth.ko") {
		t.Errorf("modules.dep missing or without veth: %v", err)
	}
	if d := debsUnder(CacheDir()); len(d) > 0 {
		t.Errorf("downloads left behind: %v", d)
	}

	os.Remove(k.markerPath())
	os.Remove(k.Vmlinuz())
	if k.Cached() {
		t.Fatal("cache without marker counted as ready")
	}
	if err := k.Fetch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(k.Vmlinuz()); err != nil || !k.Cached() {
		t.Fatalf("half-unpacked cache was not redone: %v", err)
	}
}

type tlog struct{ t *testing.T }

func (l tlog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestPin re-pins the stable 6.12 entry into a copy of kernels.json and
// checks the result is complete and leaves the other entries alone.
func TestPin(t *testing.T) {
	ctx := netCache(t)
	path := filepath.Join(t.TempDir(), "kernels.json")
	if err := os.WriteFile(path, pinnedJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Pin(ctx, path, []string{"6.12"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Name != "6.12" {
		t.Fatalf("pinned %+v, want only 6.12", res)
	}
	b, _ := os.ReadFile(path)
	m, err := parseMatrix(b)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := Pinned()
	for i, k := range m.Kernels {
		if k.Name != "6.12" {
			if describe(&k) != describe(&old.Kernels[i]) {
				t.Errorf("%s changed: %s -> %s", k.Name, describe(&old.Kernels[i]), describe(&k))
			}
			continue
		}
		if !regexp.MustCompile(k.Track.Release).MatchString(k.Release) || len(k.Packages) != 1 || len(k.Packages[0].SHA256) != 64 {
			t.Errorf("6.12 pinned to %+v", k)
		}
		if compareVersions(k.Packages[0].Version, old.Kernels[i].Packages[0].Version) < 0 {
			t.Errorf("pin went backwards: %s -> %s", old.Kernels[i].Packages[0].Version, k.Packages[0].Version)
		}
	}
}
