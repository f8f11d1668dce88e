package kernels

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PinCommand is what refreshes kernels.json; error messages name it.
const PinCommand = "lab kernels pin"

// ErrVanished is returned (wrapped) when a pinned version is gone from the
// mirror, which happens to sid's kernels every few weeks.
var ErrVanished = errors.New("pinned version vanished from the mirror")

// ErrChecksum is returned (wrapped) when a download does not match its pin.
var ErrChecksum = errors.New("checksum mismatch")

// Options tune a fetch.
type Options struct {
	Log io.Writer // progress lines; nil is quiet
}

func (o *Options) logf(format string, args ...any) {
	if o != nil && o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Fetch makes sure k is in the cache, ready to boot: downloaded with apt,
// verified, unpacked, modules decompressed and indexed. A cached kernel
// needs no network.
func (k *Kernel) Fetch(ctx context.Context, o *Options) error {
	if k.IsHost() || k.Cached() {
		return nil
	}
	if len(k.Packages) == 0 {
		return fmt.Errorf("kernel %s has no pinned packages; run '%s %s'", k.Name, PinCommand, k.Name)
	}
	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, filepath.Join(CacheDir(), ".lock-"+k.key()))
	if err != nil {
		return err
	}
	defer unlock()
	if k.Cached() { // another process finished it while we waited
		return nil
	}
	start := time.Now()
	// Whatever is there without a matching marker is a killed or older
	// fetch: start over.
	if err := os.RemoveAll(k.Dir()); err != nil {
		return err
	}
	apt, err := NewApt()
	if err != nil {
		return err
	}
	if o != nil {
		apt.Log = o.Log
	}
	if !apt.hasLists() {
		o.logf("%s: updating the private package lists (%s)", k.Name, apt.Dir)
	}
	if err := apt.ensureLists(ctx); err != nil {
		return err
	}
	dl := k.Dir() + ".download"
	os.RemoveAll(dl)
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dl)
	var debs []string
	for _, p := range k.Packages {
		o.logf("%s: downloading %s %s (%d MB)", k.Name, p.Name, p.Version, p.Size>>20)
		f, err := apt.Download(ctx, dl, p)
		if errors.Is(err, errNotOnMirror) {
			// The lists may be stale rather than the pin: refresh once.
			if uerr := apt.Update(ctx); uerr == nil {
				f, err = apt.Download(ctx, dl, p)
			}
		}
		if errors.Is(err, errNotOnMirror) {
			return fmt.Errorf("kernel %s: %s %s is no longer on the mirror (%s moves on): %w; run '%s %s' to pin the current build, then review and commit kernels/kernels.json",
				k.Name, p.Name, p.Version, k.Suite, ErrVanished, PinCommand, k.Name)
		}
		if err != nil {
			return fmt.Errorf("kernel %s: %w", k.Name, err)
		}
		if err := verify(f, p.SHA256); err != nil {
			os.Remove(f)
			return fmt.Errorf("kernel %s: %s: %w (the download was deleted; if the mirror really changed it, run '%s %s')", k.Name, filepath.Base(f), err, PinCommand, k.Name)
		}
		debs = append(debs, f)
	}
	return k.unpack(ctx, debs, o, start)
}

func verify(path, want string) error {
	got, err := fileSHA256(path)
	if err != nil {
		return err
	}
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("%w: sha256 %s, pinned %s", ErrChecksum, got, want)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// unpack extracts verified packages into a staging directory, prepares the
// modules, then renames it into place and writes the marker last.
func (k *Kernel) unpack(ctx context.Context, debs []string, o *Options, start time.Time) error {
	stage := k.Dir() + ".partial"
	os.RemoveAll(stage)
	root := filepath.Join(stage, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(stage)
		}
	}()
	for _, d := range debs {
		o.logf("%s: unpacking %s", k.Name, filepath.Base(d))
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", d, root).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s: %w: %s", d, err, out)
		}
	}
	if err := normalizeLayout(root, k.Release); err != nil {
		return fmt.Errorf("kernel %s: %w", k.Name, err)
	}
	mods := filepath.Join(root, "lib", "modules", k.Release)
	o.logf("%s: decompressing modules", k.Name)
	if err := decompressModules(ctx, mods); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "depmod", "-a", "-b", root, k.Release).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod for %s: %w: %s (is kmod installed? run 'make deps')", k.Release, err, out)
	}
	if err := os.Rename(stage, k.Dir()); err != nil {
		return err
	}
	ok = true
	if err := os.WriteFile(k.markerPath(), []byte(k.marker()), 0o644); err != nil {
		return err
	}
	o.logf("%s: ready in %s (%.1fs)", k.Name, k.Dir(), time.Since(start).Seconds())
	return nil
}

// normalizeLayout gives every kernel boot/vmlinuz-REL and lib/modules/REL:
// sid's packages keep both under usr/lib/modules/REL.
func normalizeLayout(root, rel string) error {
	usrMods := filepath.Join(root, "usr", "lib", "modules", rel)
	mods := filepath.Join(root, "lib", "modules", rel)
	if _, err := os.Stat(mods); os.IsNotExist(err) {
		if _, err := os.Stat(usrMods); err != nil {
			return fmt.Errorf("no lib/modules/%s in the packages", rel)
		}
		if err := os.MkdirAll(filepath.Dir(mods), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join("..", "..", "usr", "lib", "modules", rel), mods); err != nil {
			return err
		}
	}
	img := filepath.Join(root, "boot", "vmlinuz-"+rel)
	if _, err := os.Stat(img); os.IsNotExist(err) {
		// linux-binary-unsigned ships vmlinuz.unsigned, the signed one vmlinuz.
		name := ""
		for _, n := range []string{"vmlinuz", "vmlinuz.unsigned"} {
			if _, err := os.Stat(filepath.Join(usrMods, n)); err == nil {
				name = n
				break
			}
		}
		if name == "" {
			return fmt.Errorf("no vmlinuz for %s in the packages", rel)
		}
		if err := os.MkdirAll(filepath.Dir(img), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join("..", "usr", "lib", "modules", rel, name), img); err != nil {
			return err
		}
	}
	return nil
}

// decompressModules turns .ko.xz into .ko: the busybox insmod in
// virtme-ng's initramfs (and our own init) cannot read compressed modules.
func decompressModules(ctx context.Context, dir string) error {
	dir, err := filepath.EvalSymlinks(dir) // sid's lib/modules/REL is a link
	if err != nil {
		return err
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".ko.xz") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for len(files) > 0 {
		n := min(len(files), 500)
		args := append([]string{"-d", "-f", "-T0"}, files[:n]...)
		if out, err := exec.CommandContext(ctx, "xz", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("xz -d: %w: %s (is xz-utils installed? run 'make deps')", err, out)
		}
		files = files[n:]
	}
	return nil
}

// FetchTool downloads the pinned package of a tool (see kernels.json
// "tools") into dir through the private apt configuration and verifies its
// sha256; it returns the .deb's path. A mismatch deletes the file.
func FetchTool(ctx context.Context, name, dir string, log io.Writer) (string, error) {
	m, err := Pinned()
	if err != nil {
		return "", err
	}
	t, ok := m.Tools[name]
	if !ok {
		return "", fmt.Errorf("no tool %q pinned in kernels.json", name)
	}
	apt, err := NewApt()
	if err != nil {
		return "", err
	}
	apt.Log = log
	if err := apt.ensureLists(ctx); err != nil {
		return "", err
	}
	f, err := apt.Download(ctx, dir, t.Package)
	if errors.Is(err, errNotOnMirror) {
		if uerr := apt.Update(ctx); uerr == nil {
			f, err = apt.Download(ctx, dir, t.Package)
		}
	}
	if errors.Is(err, errNotOnMirror) {
		return "", fmt.Errorf("%s %s is no longer in %s: %w; run '%s' and commit kernels/kernels.json", t.Name, t.Version, t.Suite, ErrVanished, PinCommand)
	}
	if err != nil {
		return "", err
	}
	if err := verify(f, t.SHA256); err != nil {
		os.Remove(f)
		return "", fmt.Errorf("%s: %w (the download was deleted)", filepath.Base(f), err)
	}
	return f, nil
}

// ToolVersion is the pinned version of a tool.
func ToolVersion(name string) (string, error) {
	m, err := Pinned()
	if err != nil {
		return "", err
	}
	t, ok := m.Tools[name]
	if !ok {
		return "", fmt.Errorf("no tool %q pinned in kernels.json", name)
	}
	return t.Version, nil
}
