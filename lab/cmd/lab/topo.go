package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdplab/xdplab/lab/netlab"
)

// The lab is one star topology (design §4): client — proxy — kv1..kvN,
// built by `lab up` under a detached netlab prefix so it outlives the
// command. Its only state outside the kernel is a small JSON file naming
// the prefix and the backend count; everything else (interfaces,
// addresses) is read back from the namespaces with netlab.Open, which
// also tells a complete lab from the remains of a crashed `lab up`.
//
// Decisions:
//   - `lab up` with a lab already up reports it and changes nothing, unless
//     --backends is given and differs, or the lab is incomplete: then it
//     removes the old lab (stopping whatever runs in it) and builds anew.
//   - The state file is written before building, so `lab down` finds and
//     removes a half-built lab after a crash.
//   - `lab down` with no lab up succeeds and says so.
//   - `lab status` with no lab up fails (exit 1): there is nothing to show.
//   - XDP_PASS goes on the client's and the backends' interfaces, so the
//     proxy's XDP_TX and XDP_REDIRECT frames are delivered (see netlab).
//     A native XDP program of your own on those interfaces needs it
//     removed first: ip -n NETNS link set dev DEV xdp off.

func init() {
	register(command{name: "up", summary: "build the lab: client — proxy — kv1..kvN in network namespaces", run: upCmd})
	register(command{name: "down", summary: "remove the lab and stop everything running in it", run: downCmd})
	register(command{name: "status", summary: "show the lab's hosts, interfaces and addresses (--json)", run: statusCmd})
}

// labDirEnv overrides where the lab's state lives, so tests (and parallel
// users) keep separate labs.
const labDirEnv = "XDPLAB_RUN_DIR"

const (
	defaultLabDir   = "/run/xdplab" // tmpfs, like the namespaces: both go at reboot
	defaultBackends = 3
	maxBackends     = netlab.MaxLinks - 1
	labStateFile    = "lab.json"
	labLockFile     = "lab.lock"
)

var errNoLab = errors.New("no lab is up: run 'lab up'")

type labState struct {
	Prefix   string `json:"prefix"`
	Backends int    `json:"backends"`
}

// spec puts the placeholder XDP_PASS on every veth end, the proxy's too: any
// host may run an XDP server that replies with XDP_TX or forwards with
// XDP_REDIRECT, and its peer must then have an XDP program for the frames to
// arrive. `lab kv serve` and the proxy take the placeholder's place.
func (s labState) spec() netlab.Spec {
	spec := netlab.StarSpec(s.Backends, netlab.Options{Prefix: s.Prefix, PeerXDP: true})
	for i := range spec.Hosts {
		spec.Hosts[i].XDPPass = true
	}
	return spec
}

// labDir holds lab.json and the lock that serialises up, down and status.
type labDir string

func currentLabDir() labDir {
	if d := os.Getenv(labDirEnv); d != "" {
		return labDir(d)
	}
	return defaultLabDir
}

// lock takes an flock on the directory's lock file, exclusive or shared,
// and returns its release.
func (d labDir) lock(exclusive bool) (func(), error) {
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(string(d), labLockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// read returns the recorded lab, or errNoLab.
func (d labDir) read() (labState, error) {
	var s labState
	b, err := os.ReadFile(filepath.Join(string(d), labStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, errNoLab
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(string(d), labStateFile), err)
	}
	if p, pid, ok := netlab.ParsePrefix(s.Prefix); !ok || p != s.Prefix || pid != 0 || s.Backends < 1 || s.Backends > maxBackends {
		return s, fmt.Errorf("%s: not a lab record: %s", filepath.Join(string(d), labStateFile), b)
	}
	return s, nil
}

// write replaces the record atomically.
func (d labDir) write(s labState) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := filepath.Join(string(d), labStateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(string(d), labStateFile))
}

func (d labDir) forget() error {
	err := os.Remove(filepath.Join(string(d), labStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// up makes sure a lab is up and returns it (Detach it when done) and the
// state it was built with. wantBackends 0 means: keep whatever count an
// existing lab has, else defaultBackends. progress gets one line per step.
func (d labDir) up(wantBackends int, progress io.Writer) (*netlab.Topology, labState, error) {
	unlock, err := d.lock(true)
	if err != nil {
		return nil, labState{}, err
	}
	defer unlock()
	old, err := d.read()
	switch {
	case errors.Is(err, errNoLab):
	case err != nil:
		return nil, labState{}, err
	default:
		t, oerr := netlab.Open(old.spec())
		if oerr == nil && (wantBackends == 0 || wantBackends == old.Backends) {
			fmt.Fprintf(progress, "lab %s is already up with %d backends; 'lab down' removes it\n", old.Prefix, old.Backends)
			if err := repairPlaceholders(t, progress); err != nil {
				t.Detach()
				return nil, labState{}, err
			}
			return t, old, nil
		}
		if oerr != nil {
			fmt.Fprintf(progress, "lab %s is incomplete (%v): rebuilding\n", old.Prefix, oerr)
		} else {
			t.Detach()
			fmt.Fprintf(progress, "lab %s has %d backends, want %d: rebuilding (anything running in it is stopped)\n", old.Prefix, old.Backends, wantBackends)
		}
		if err := netlab.Sweep(old.Prefix); err != nil {
			return nil, labState{}, err
		}
		if err := d.forget(); err != nil {
			return nil, labState{}, err
		}
	}
	s := labState{Prefix: netlab.NewDetachedPrefix(), Backends: wantBackends}
	if s.Backends == 0 {
		s.Backends = defaultBackends
	}
	// Recorded first: if we die while building, down (or the next up)
	// still knows what to remove.
	if err := d.write(s); err != nil {
		return nil, labState{}, err
	}
	fmt.Fprintf(progress, "building lab %s: client — proxy — kv1..kv%d\n", s.Prefix, s.Backends)
	t, err := netlab.New(s.spec())
	if err != nil {
		// New removed what it built.
		if ferr := d.forget(); ferr != nil {
			err = fmt.Errorf("%w (and %v)", err, ferr)
		}
		return nil, labState{}, err
	}
	return t, s, nil
}

// down stops the servers serving in the recorded lab, if any, removes it
// and returns its prefix ("" if none was up); progress gets a line per
// server stopped.
func (d labDir) down(progress io.Writer) (string, error) {
	unlock, err := d.lock(true)
	if err != nil {
		return "", err
	}
	defer unlock()
	s, err := d.read()
	if errors.Is(err, errNoLab) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	// Servers first: they detach and exit cleanly while their
	// namespaces still exist.
	stopped, err := d.stopServers(10 * time.Second)
	for _, l := range stopped {
		fmt.Fprintln(progress, l)
	}
	if err != nil {
		return "", err
	}
	if err := netlab.Sweep(s.Prefix); err != nil {
		return "", err // the record stays, so down can be retried
	}
	return s.Prefix, d.forget()
}

// repairPlaceholders puts the XDP_PASS placeholder back on every veth end
// of the lab that has no XDP program: a server killed with SIGKILL loses
// its program with its link, and cannot put the placeholder back, so XDP_TX
// and XDP_REDIRECT towards that end stop delivering.
func repairPlaceholders(t *netlab.Topology, progress io.Writer) error {
	for _, h := range t.Hosts {
		for _, i := range h.Ifaces {
			err := h.Do(func() error {
				name, err := netlab.XDPProgram(i.Name)
				if err != nil || name != "" {
					return err
				}
				if err := netlab.PutXDPPass(i.Name); err != nil {
					return err
				}
				fmt.Fprintf(progress, "put the XDP_PASS placeholder back on %s in %s (it had no XDP program: a server there was killed?)\n", i.Name, h.NetNS)
				return nil
			})
			if err != nil {
				return fmt.Errorf("XDP on %s in %s: %w", i.Name, h.NetNS, err)
			}
		}
	}
	return nil
}

// open returns the lab that is up, checked against the kernel.
func (d labDir) open() (*netlab.Topology, labState, error) {
	unlock, err := d.lock(false)
	if err != nil {
		return nil, labState{}, err
	}
	defer unlock()
	s, err := d.read()
	if err != nil {
		return nil, s, err
	}
	t, err := netlab.Open(s.spec())
	if err != nil {
		return nil, s, fmt.Errorf("lab %s is incomplete (%v): run 'lab up' to rebuild it or 'lab down' to remove it", s.Prefix, err)
	}
	return t, s, nil
}

// statusHost is one host of `lab status --json`. Dev is the interface a
// server on the host attaches to: the one facing the client on the proxy,
// the one facing the proxy elsewhere.
type statusHost struct {
	Name  string `json:"name"`
	Role  string `json:"role"`
	NetNS string `json:"netns"`
	Dev   string `json:"dev"`
	IPv4  string `json:"ipv4"`
	IPv6  string `json:"ipv6"`
	// XDP names the program on Dev: "xdp_pass" (the placeholder), a
	// server's, or "" when there is none, which lab up repairs.
	XDP string `json:"xdp"`
}

type statusReport struct {
	Prefix string       `json:"prefix"`
	Hosts  []statusHost `json:"hosts"`
}

// labStatus is the report on the lab that is up.
func labStatus() (statusReport, error) {
	t, _, err := currentLabDir().open()
	if err != nil {
		return statusReport{}, err
	}
	defer t.Detach()
	return labStatusOf(t), nil
}

func labStatusOf(t *netlab.Topology) statusReport {
	r := statusReport{Prefix: t.Prefix, Hosts: []statusHost{}}
	for _, h := range t.Hosts {
		towards := "proxy"
		if h.Role == "proxy" {
			towards = "client"
		}
		sh := statusHost{Name: h.Name, Role: h.Role, NetNS: h.NetNS}
		if i := h.IfaceTo(towards); i != nil {
			sh.Dev, sh.IPv4, sh.IPv6 = i.Name, i.IPv4.Addr().String(), i.IPv6.Addr().String()
			h.Do(func() (err error) { sh.XDP, err = netlab.XDPProgram(i.Name); return err })
		}
		r.Hosts = append(r.Hosts, sh)
	}
	return r
}

func printStatus(w io.Writer, r statusReport, asJSON bool) error {
	if asJSON {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tNETNS\tDEV\tIPV4\tIPV6\tXDP")
	missing := false
	for _, h := range r.Hosts {
		xdp := h.XDP
		if xdp == "" {
			xdp, missing = "none!", true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Role, h.NetNS, h.Dev, h.IPv4, h.IPv6, xdp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if missing {
		fmt.Fprintln(w, "none!: no XDP program, not even the placeholder (a server was killed?): 'lab up' puts it back")
	}
	_, err := fmt.Fprintf(w, "run a command on a host: nsenter --net=%s/NETNS -- CMD\n", netlab.NetnsDir)
	return err
}

func needRoot(cmd string) error {
	if os.Geteuid() != 0 {
		return usageError{"lab " + cmd + " needs root (network namespaces, XDP): run it with sudo"}
	}
	return nil
}

func upCmd(args []string) error {
	fs := newFlags("up")
	backends := fs.String("backends", "", "number of kv hosts, 1.."+strconv.Itoa(maxBackends)+" (default "+strconv.Itoa(defaultBackends)+", or the running lab's)")
	asJSON := fs.Bool("json", false, "print the lab as JSON, like 'lab status --json'")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	n := 0
	if *backends != "" {
		v, err := strconv.Atoi(*backends)
		if err != nil || v < 1 || v > maxBackends {
			return usageError{fmt.Sprintf("--backends must be a number from 1 to %d", maxBackends)}
		}
		n = v
	}
	if fs.NArg() > 0 {
		return usageError{"usage: lab up [--backends N] [--json]"}
	}
	if err := needRoot("up"); err != nil {
		return err
	}
	progress := io.Writer(os.Stdout)
	if *asJSON {
		progress = os.Stderr // keep stdout pure JSON
	}
	t, _, err := currentLabDir().up(n, progress)
	if err != nil {
		return err
	}
	defer t.Detach()
	return printStatus(os.Stdout, labStatusOf(t), *asJSON)
}

func downCmd(args []string) error {
	fs := newFlags("down")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"usage: lab down"}
	}
	if err := needRoot("down"); err != nil {
		return err
	}
	prefix, err := currentLabDir().down(os.Stdout)
	if err != nil {
		return err
	}
	if prefix == "" {
		fmt.Println("no lab was up")
	} else {
		fmt.Printf("removed lab %s\n", prefix)
	}
	return nil
}

func statusCmd(args []string) error {
	fs := newFlags("status")
	asJSON := fs.Bool("json", false, `print {"prefix":…,"hosts":[{"name","role","netns","dev","ipv4","ipv6"}…]}`)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"usage: lab status [--json]"}
	}
	if err := needRoot("status"); err != nil {
		return err
	}
	r, err := labStatus()
	if err != nil {
		return err
	}
	return printStatus(os.Stdout, r, *asJSON)
}
