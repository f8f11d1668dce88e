package kernels

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Suites the private apt configuration knows; all come from the one mirror.
var suites = []string{"bullseye", "bookworm", "trixie", "sid"}

const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// Apt is a private apt configuration under Dir: its own sources, lists,
// cache and an empty apt.conf.d, so the system's apt state is never read
// or written.
type Apt struct {
	Dir    string
	Mirror string
	Log    io.Writer // apt's progress output; nil discards it
}

// NewApt returns the private apt configuration under CacheDir()/apt.
func NewApt() (*Apt, error) {
	m, err := Mirror()
	if err != nil {
		return nil, err
	}
	return &Apt{Dir: filepath.Join(CacheDir(), "apt"), Mirror: m}, nil
}

// Mirror is the Debian mirror to use: $XDPLAB_DEBIAN_MIRROR, else the first
// Debian archive URI in the system's own apt sources (read, never changed).
func Mirror() (string, error) {
	if m := os.Getenv("XDPLAB_DEBIAN_MIRROR"); m != "" {
		return strings.TrimRight(m, "/"), nil
	}
	var files []string
	files = append(files, "/etc/apt/sources.list")
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append(files, more...)
	for _, f := range files {
		if !strings.HasSuffix(f, ".list") && !strings.HasSuffix(f, ".sources") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, fld := range strings.Fields(line) {
				if strings.HasPrefix(fld, "#") {
					break
				}
				u, err := url.Parse(fld)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
					continue
				}
				if strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/debian") {
					return strings.TrimRight(fld, "/"), nil
				}
			}
		}
	}
	return "", errors.New("no Debian mirror found in /etc/apt/sources.list*; set XDPLAB_DEBIAN_MIRROR to one (the URL that ends in /debian)")
}

func (a *Apt) confPath() string { return filepath.Join(a.Dir, "apt.conf") }

// setup writes the private configuration (idempotent).
func (a *Apt) setup() error {
	for _, d := range []string{"lists/partial", "cache/archives/partial", "apt.conf.d", "preferences.d", "state"} {
		if err := os.MkdirAll(filepath.Join(a.Dir, d), 0o755); err != nil {
			return err
		}
	}
	var src strings.Builder
	for _, s := range suites {
		fmt.Fprintf(&src, "deb [arch=amd64 signed-by=%s] %s %s main\n", keyring, a.Mirror, s)
	}
	if err := writeIfChanged(filepath.Join(a.Dir, "sources.list"), src.String()); err != nil {
		return err
	}
	// APT_CONFIG is read before apt.conf.d, so pointing Dir::Etc::Parts at
	// our own empty directory keeps the system's settings out as well.
	// Check-Valid-Until is off because the mirror may be a snapshot whose
	// Release files have expired; signatures are still checked, and the
	// sha256 pins are what guard the kernels.
	conf := fmt.Sprintf(`Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "%[1]s/apt.conf.d";
Dir::Etc::SourceList "%[1]s/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "%[1]s/preferences.d";
Dir::State "%[1]s/state";
Dir::State::Lists "%[1]s/lists";
Dir::State::status "/dev/null";
Dir::Cache "%[1]s/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
APT::Sandbox::User "root";
Debug::NoLocking "true";
Acquire::Check-Valid-Until "false";
`, a.Dir)
	return writeIfChanged(a.confPath(), conf)
}

func writeIfChanged(path, content string) error {
	if b, err := os.ReadFile(path); err == nil && string(b) == content {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

func (a *Apt) cmd(ctx context.Context, dir string, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "APT_CONFIG="+a.confPath(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	return c
}

// run runs an apt command, streaming to a.Log and keeping the output for
// error messages.
func (a *Apt) run(ctx context.Context, dir string, name string, args ...string) (string, error) {
	c := a.cmd(ctx, dir, name, args...)
	var buf bytes.Buffer
	var w io.Writer = &buf
	if a.Log != nil {
		w = io.MultiWriter(&buf, a.Log)
	}
	c.Stdout, c.Stderr = w, w
	err := c.Run()
	if err != nil {
		return buf.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, lastLines(buf.String(), 8))
	}
	return buf.String(), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Update refreshes the private package lists.
func (a *Apt) Update(ctx context.Context) error { return a.update(ctx, false) }

// ensureLists runs Update unless the lists are there, checking again under
// the lock so concurrent fetches update once and never under each other.
func (a *Apt) ensureLists(ctx context.Context) error {
	if a.hasLists() {
		return nil
	}
	return a.update(ctx, true)
}

// update runs apt-get update under the lock; ifMissing skips it when the
// lists turned up while this process waited for the lock.
func (a *Apt) update(ctx context.Context, ifMissing bool) error {
	if err := a.setup(); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, filepath.Join(a.Dir, ".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if ifMissing && a.hasLists() {
		return nil
	}
	_, err = a.run(ctx, a.Dir, "apt-get", "-q", "update")
	return err
}

// hasLists reports whether every suite's Packages index is present.
func (a *Apt) hasLists() bool {
	for _, s := range suites {
		if _, err := a.packagesFile(s); err != nil {
			return false
		}
	}
	return true
}

func (a *Apt) packagesFile(suite string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(a.Dir, "lists", "*_dists_"+suite+"_main_binary-amd64_Packages*"))
	if len(m) == 0 {
		return "", fmt.Errorf("no package list for %s (apt-get update not run?)", suite)
	}
	return m[0], nil
}

// errNotOnMirror marks an `apt-get download` of a name=version the mirror
// no longer serves.
var errNotOnMirror = errors.New("not on the mirror")

// Download fetches name=version into dir with apt-get download (which also
// checks the signed index's hashes).
func (a *Apt) Download(ctx context.Context, dir string, p Package) (string, error) {
	out, err := a.run(ctx, dir, "apt-get", "-q", "download", p.Name+"="+p.Version)
	if err != nil {
		if strings.Contains(out, "was not found") || strings.Contains(out, "Unable to locate package") ||
			strings.Contains(out, "Couldn't find any package") || strings.Contains(out, "has no installation candidate") ||
			strings.Contains(out, "404") {
			return "", fmt.Errorf("%s=%s: %w", p.Name, p.Version, errNotOnMirror)
		}
		return "", err
	}
	m, _ := filepath.Glob(filepath.Join(dir, p.Name+"_*.deb"))
	if len(m) != 1 {
		return "", fmt.Errorf("apt-get download %s=%s left %d files", p.Name, p.Version, len(m))
	}
	return m[0], nil
}

// stanza is one paragraph of a Packages index.
type stanza map[string]string

// Index reads a suite's Packages index (apt-helper undoes any compression).
func (a *Apt) Index(ctx context.Context, suite string) ([]stanza, error) {
	f, err := a.packagesFile(suite)
	if err != nil {
		return nil, err
	}
	c := a.cmd(ctx, a.Dir, "/usr/lib/apt/apt-helper", "cat-file", f)
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	var res []stanza
	cur := stanza{}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(cur) > 0 {
				res = append(res, cur)
			}
			cur = stanza{}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation lines: none of the fields we read use them
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			cur[k] = strings.TrimSpace(v)
		}
	}
	if len(cur) > 0 {
		res = append(res, cur)
	}
	if err := c.Wait(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", f, err)
	}
	return res, sc.Err()
}

// newest returns, per package name matching re, the stanza with the highest version.
func newest(idx []stanza, re *regexp.Regexp) map[string]stanza {
	res := map[string]stanza{}
	for _, s := range idx {
		n := s["Package"]
		if !re.MatchString(n) {
			continue
		}
		if old, ok := res[n]; !ok || compareVersions(s["Version"], old["Version"]) > 0 {
			res[n] = s
		}
	}
	return res
}
