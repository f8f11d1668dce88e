// Package kernels knows the pinned kernel matrix (kernels.json), fetches its
// Debian packages through a private apt configuration, verifies them and
// keeps them unpacked in a cache that needs no network once filled.
package kernels

import (
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

//go:embed kernels.json
var pinnedJSON []byte

// HostName is the implicit matrix entry that means the running kernel.
const HostName = "host"

// Package is one pinned Debian package.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

// Track says how `Pin` finds the newest build of a kernel in its suite.
// Release is a regular expression for `uname -r`; each package name contains
// the placeholder {release}.
type Track struct {
	Release  string   `json:"release"`
	Packages []string `json:"packages"`
}

// Kernel is one entry of the matrix.
type Kernel struct {
	Name     string    `json:"name"`
	Suite    string    `json:"suite"`
	Release  string    `json:"release"` // what `uname -r` prints in the guest
	Packages []Package `json:"packages"`
	Track    Track     `json:"track"`
}

// Tool is a pinned helper package (virtme-ng), fetched like the kernels.
type Tool struct {
	Suite   string `json:"suite"`
	Package `json:"package"`
}

// Matrix is the content of kernels.json.
type Matrix struct {
	Comment string          `json:"comment,omitempty"`
	Kernels []Kernel        `json:"kernels"`
	Tools   map[string]Tool `json:"tools"`
}

// Pinned returns the matrix compiled into the binary from kernels.json.
func Pinned() (*Matrix, error) {
	return parseMatrix(pinnedJSON)
}

func parseMatrix(b []byte) (*Matrix, error) {
	var m Matrix
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("kernels.json: %w", err)
	}
	return &m, nil
}

// Names lists the pinned kernels in matrix order, without host.
func (m *Matrix) Names() []string {
	var n []string
	for _, k := range m.Kernels {
		n = append(n, k.Name)
	}
	return n
}

// Lookup finds a kernel by short name (5.10) or release (6.1.0-50-amd64).
// "host" yields an entry for the running kernel with no packages.
func (m *Matrix) Lookup(name string) (*Kernel, error) {
	if name == HostName {
		return Host(), nil
	}
	for i := range m.Kernels {
		if m.Kernels[i].Name == name || m.Kernels[i].Release == name {
			return &m.Kernels[i], nil
		}
	}
	return nil, fmt.Errorf("unknown kernel %q (pinned: %s, or %s)", name, strings.Join(m.Names(), ", "), HostName)
}

// Select resolves a comma-separated list of kernel names (as -kernels and
// $XDPLAB_KERNELS take it); empty means every pinned kernel.
func (m *Matrix) Select(list string) ([]*Kernel, error) {
	names := m.Names()
	if strings.TrimSpace(list) != "" {
		names = strings.Split(list, ",")
	}
	var ks []*Kernel
	for _, n := range names {
		k, err := m.Lookup(strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// Lookup finds a pinned kernel in the compiled-in matrix.
func Lookup(name string) (*Kernel, error) {
	m, err := Pinned()
	if err != nil {
		return nil, err
	}
	return m.Lookup(name)
}

// Host returns the implicit entry for the running kernel.
func Host() *Kernel {
	var u unix.Utsname
	rel := "unknown"
	if unix.Uname(&u) == nil {
		rel = unix.ByteSliceToString(u.Release[:])
	}
	return &Kernel{Name: HostName, Release: rel}
}

// IsHost reports whether k is the running kernel (no VM needed).
func (k *Kernel) IsHost() bool { return k.Name == HostName }

// CacheDir is where unpacked kernels live: $XDPLAB_KERNEL_CACHE, else
// $XDG_CACHE_HOME/xdplab/kernels, else ~/.cache/xdplab/kernels.
func CacheDir() string {
	if d := os.Getenv("XDPLAB_KERNEL_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "xdplab", "kernels")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "xdplab", "kernels")
	}
	return filepath.Join(os.TempDir(), "xdplab-kernels")
}

// key names the cache directory: release plus the version of the first
// package, so a re-pin gets a fresh directory.
func (k *Kernel) key() string {
	v := ""
	if len(k.Packages) > 0 {
		v = k.Packages[0].Version
	}
	return strings.ReplaceAll(k.Release+"_"+v, "/", "_")
}

// CacheName is the kernel's directory name under CacheDir.
func (k *Kernel) CacheName() string { return k.key() }

// CacheKey identifies the kernel's pinned bytes: a hash over its packages'
// pinned sha256 sums, so a CI cache keyed by it is refilled exactly when a
// pin changes.
func (k *Kernel) CacheKey() string {
	h := sha256.New()
	for _, p := range k.Packages {
		fmt.Fprintf(h, "%s %s %s\n", p.Name, p.Version, p.SHA256)
	}
	return fmt.Sprintf("xdplab-kernel-%s-%x", k.Name, h.Sum(nil)[:12])
}

// Dir is the kernel's cache directory (it may not exist yet).
func (k *Kernel) Dir() string { return filepath.Join(CacheDir(), k.key()) }

// Root is the unpacked package tree.
func (k *Kernel) Root() string { return filepath.Join(k.Dir(), "root") }

// Vmlinuz is the kernel image inside the cache.
func (k *Kernel) Vmlinuz() string { return filepath.Join(k.Root(), "boot", "vmlinuz-"+k.Release) }

// ModulesDir is lib/modules/RELEASE inside the cache (decompressed, depmod'ed).
func (k *Kernel) ModulesDir() string {
	return filepath.Join(k.Root(), "lib", "modules", k.Release)
}

// Config is the kernel's build configuration inside the cache: boot/config-
// RELEASE, or config in the modules directory where the packages put it
// there (sid's split packages). "" when neither exists.
func (k *Kernel) Config() string {
	for _, p := range []string{filepath.Join(k.Root(), "boot", "config-"+k.Release), filepath.Join(k.ModulesDir(), "config")} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func (k *Kernel) markerPath() string { return filepath.Join(k.Dir(), ".ready") }

// marker is what a ready cache records, so a changed pin invalidates it.
func (k *Kernel) marker() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", k.Name, k.Release)
	for _, p := range k.Packages {
		fmt.Fprintf(&b, "%s %s %s\n", p.Name, p.Version, p.SHA256)
	}
	return b.String()
}

// Cached reports whether the kernel is fully unpacked and prepared.
func (k *Kernel) Cached() bool {
	if k.IsHost() {
		return true
	}
	b, err := os.ReadFile(k.markerPath())
	return err == nil && string(b) == k.marker()
}

// DiskSize is the size of the cached tree in bytes (0 when not cached).
func (k *Kernel) DiskSize() int64 {
	var n int64
	filepath.WalkDir(k.Dir(), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// DownloadSize is the sum of the pinned packages' sizes.
func (k *Kernel) DownloadSize() int64 {
	var n int64
	for _, p := range k.Packages {
		n += p.Size
	}
	return n
}

func sortedToolNames(m map[string]Tool) []string {
	var n []string
	for k := range m {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}
