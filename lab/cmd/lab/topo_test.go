package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdplab/xdplab/lab/netlab"
)

func needRootT(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// sweepAtEnd removes every prefix noted, whatever the test's outcome.
type sweepAtEnd struct {
	t        *testing.T
	prefixes []string
}

func newSweeper(t *testing.T) *sweepAtEnd {
	s := &sweepAtEnd{t: t}
	t.Cleanup(func() {
		for _, p := range s.prefixes {
			if err := netlab.Sweep(p); err != nil {
				t.Error(err)
			}
		}
	})
	return s
}

func (s *sweepAtEnd) note(p string) { s.prefixes = append(s.prefixes, p) }

// namespaces lists the namespaces of a run prefix.
func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	ents, err := os.ReadDir(netlab.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func mustUp(t *testing.T, d labDir, sw *sweepAtEnd, backends int) (labState, statusReport, string) {
	t.Helper()
	var out bytes.Buffer
	topo, s, err := d.up(backends, &out)
	if s.Prefix != "" {
		sw.note(s.Prefix)
	}
	if err != nil {
		t.Fatalf("up(%d): %v\n%s", backends, err, out.String())
	}
	defer topo.Detach()
	return s, labStatusOf(topo), out.String()
}

func TestLabUpStatusDown(t *testing.T) {
	needRootT(t)
	d := labDir(t.TempDir())
	sw := newSweeper(t)

	if _, _, err := d.open(); !errors.Is(err, errNoLab) {
		t.Fatalf("status before up: %v, want errNoLab", err)
	}

	s1, st, _ := mustUp(t, d, sw, 2)
	want := []statusHost{
		{"client", "client", s1.Prefix + "-client", "", "198.18.1.2", "fd00:0:0:1::2", netlab.PlaceholderName},
		{"proxy", "proxy", s1.Prefix + "-proxy", "", "198.18.1.1", "fd00:0:0:1::1", netlab.PlaceholderName},
		{"kv1", "kv", s1.Prefix + "-kv1", "", "198.18.2.2", "fd00:0:0:2::2", netlab.PlaceholderName},
		{"kv2", "kv", s1.Prefix + "-kv2", "", "198.18.3.2", "fd00:0:0:3::2", netlab.PlaceholderName},
	}
	if len(st.Hosts) != len(want) {
		t.Fatalf("status %+v, want %d hosts", st, len(want))
	}
	topo, _, err := d.open()
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range st.Hosts {
		w := want[i]
		w.Dev = h.Dev
		if h != w {
			t.Errorf("host %d: %+v, want %+v", i, h, w)
		}
		// dev is real, carries the address shown, and has the XDP_PASS
		// placeholder (servers take its place), so XDP_TX and redirected
		// frames from its peer arrive.
		host := topo.Host(h.Name)
		err := host.Do(func() error {
			l, err := netlink.LinkByName(h.Dev)
			if err != nil {
				return err
			}
			if x := l.Attrs().Xdp; x == nil || !x.Attached {
				t.Errorf("%s %s: XDP attached %v", h.Name, h.Dev, x != nil && x.Attached)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", h.Name, err)
		}
		if i := host.Iface(h.Dev); i == nil || i.IPv4.Addr().String() != h.IPv4 {
			t.Errorf("%s: dev %s does not carry %s", h.Name, h.Dev, h.IPv4)
		}
	}
	if d := topo.Host("proxy").IfaceTo("client"); d == nil || d.Name != st.Hosts[1].Dev {
		t.Errorf("proxy dev %s is not the one facing the client", st.Hosts[1].Dev)
	}
	topo.Detach()

	// Idempotent: the same lab again, with or without the same count.
	for _, n := range []int{0, 2} {
		s, _, out := mustUp(t, d, sw, n)
		if s != s1 || !strings.Contains(out, "already up") {
			t.Errorf("second up(%d): %+v %q, want the existing %+v reported", n, s, out, s1)
		}
	}

	// A different count rebuilds; the old lab is gone.
	s2, st, out := mustUp(t, d, sw, 3)
	if s2.Prefix == s1.Prefix || len(st.Hosts) != 5 || !strings.Contains(out, "rebuilding") {
		t.Errorf("up(3) over 2 backends: %+v, %d hosts, %q", s2, len(st.Hosts), out)
	}
	if left := namespaces(t, s1.Prefix); len(left) > 0 {
		t.Errorf("old lab left %v", left)
	}

	// A lab missing a piece (a crash, or someone's ip netns del) is
	// reported by status and rebuilt, with its count, by up.
	if out, err := exec.Command("ip", "netns", "del", s2.Prefix+"-kv2").CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v %s", err, out)
	}
	if _, _, err := d.open(); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("status of a broken lab: %v", err)
	}
	s3, st, _ := mustUp(t, d, sw, 0)
	if s3.Prefix == s2.Prefix || s3.Backends != 3 || len(st.Hosts) != 5 {
		t.Errorf("up over a broken lab: %+v with %d hosts", s3, len(st.Hosts))
	}
	if left := namespaces(t, s2.Prefix); len(left) > 0 {
		t.Errorf("broken lab left %v", left)
	}

	// down removes the lab and stops what runs in it.
	sleep := exec.Command("nsenter", "--net="+filepath.Join(netlab.NetnsDir, s3.Prefix+"-kv1"), "--", "sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleep.Wait() }()
	t.Cleanup(func() { sleep.Process.Kill() })
	// nsenter enters the namespace before it execs sleep: wait for that, or
	// down may look before the process is there to kill.
	self, _ := os.Readlink("/proc/self/ns/net")
	for i := 0; i < 500; i++ {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sleep.Process.Pid)); err == nil && ns != self {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p, err := d.down(io.Discard); err != nil || p != s3.Prefix {
		t.Fatalf("down: %q, %v", p, err)
	}
	<-waited // Sweep waits for the kill; a hang here is the failure
	if left := namespaces(t, s3.Prefix); len(left) > 0 {
		t.Errorf("down left %v", left)
	}
	if p, err := d.down(io.Discard); err != nil || p != "" {
		t.Errorf("second down: %q, %v; want nothing to do", p, err)
	}
	if _, _, err := d.open(); !errors.Is(err, errNoLab) {
		t.Errorf("status after down: %v", err)
	}
}

// TestLabDownAfterCrashedUp: up records the lab before building it, so
// what a crash mid-build leaves is found and removed.
func TestLabDownAfterCrashedUp(t *testing.T) {
	needRootT(t)
	d := labDir(t.TempDir())
	sw := newSweeper(t)
	s := labState{Prefix: netlab.NewDetachedPrefix(), Backends: 4}
	sw.note(s.Prefix)
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.write(s); err != nil {
		t.Fatal(err)
	}
	// Half of the lab: as far as a killed `lab up` got.
	half, err := netlab.New(netlab.StarSpec(1, netlab.Options{Prefix: s.Prefix, PeerXDP: true}))
	if err != nil {
		t.Fatal(err)
	}
	half.Detach()
	if n := len(namespaces(t, s.Prefix)); n != 3 {
		t.Fatalf("%d namespaces built, want 3", n)
	}
	if p, err := d.down(io.Discard); err != nil || p != s.Prefix {
		t.Fatalf("down: %q, %v", p, err)
	}
	if left := namespaces(t, s.Prefix); len(left) > 0 {
		t.Errorf("down after a crashed up left %v", left)
	}
}

// labCLI runs a lab binary built for the test, with a state directory of
// the test's own; the lab it brings up is swept when the test ends.
type labCLI struct {
	t        *testing.T
	bin      string
	stateDir string
}

func newLabCLI(t *testing.T) *labCLI {
	t.Helper()
	needRootT(t)
	if testing.Short() {
		t.Skip("builds the lab binary")
	}
	tmp := t.TempDir()
	c := &labCLI{t: t, bin: filepath.Join(tmp, "lab"), stateDir: filepath.Join(tmp, "state")}
	if out, err := exec.Command("go", "build", "-o", c.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sw := newSweeper(t)
	t.Cleanup(func() {
		if s, err := labDir(c.stateDir).read(); err == nil {
			sw.note(s.Prefix)
		}
	})
	return c
}

func (c *labCLI) command(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), labDirEnv+"="+c.stateDir)
	return cmd
}

// run runs lab with args and returns its stdout, stderr and exit status.
func (c *labCLI) run(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := c.command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		c.t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// fails checks that lab args exits with code and says one line holding msg.
func (c *labCLI) fails(code int, msg string, args ...string) {
	c.t.Helper()
	_, stderr, got := c.run(args...)
	if got != code || !strings.Contains(stderr, msg) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
		c.t.Errorf("lab %s: exit %d, stderr %q; want exit %d and one line with %q", strings.Join(args, " "), got, stderr, code, msg)
	}
}

// runJSON runs lab args, which must succeed, and decodes its stdout into v.
func (c *labCLI) runJSON(v any, args ...string) {
	c.t.Helper()
	stdout, stderr, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("lab %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), v); err != nil {
		c.t.Fatalf("lab %s: stdout is not JSON: %v\n%s", strings.Join(args, " "), err, stdout)
	}
}

// TestLabCommands runs the built binary: exit codes, one-line errors,
// JSON on stdout.
func TestLabCommands(t *testing.T) {
	c := newLabCLI(t)
	for _, e := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"status"}, 1, "no lab is up"},
		{[]string{"status", "--json"}, 1, "no lab is up"},
		{[]string{"up", "--backends", "0"}, 2, "--backends must be"},
		{[]string{"up", "--backends", "x"}, 2, "--backends must be"},
		{[]string{"up", "--nope"}, 2, "not defined"},
		{[]string{"down", "extra"}, 2, "usage: lab down"},
		{[]string{"status", "extra"}, 2, "usage: lab status"},
	} {
		c.fails(e.code, e.err, e.args...)
	}

	var up statusReport
	c.runJSON(&up, "up", "--backends", "1", "--json")
	var st statusReport
	c.runJSON(&st, "status", "--json")
	if len(st.Hosts) != 3 || st.Prefix != up.Prefix {
		t.Fatalf("lab status --json = %+v, want the 3 hosts lab up printed", st)
	}
	// The field names are the interface others script against.
	var raw struct {
		Hosts []map[string]any `json:"hosts"`
	}
	c.runJSON(&raw, "status", "--json")
	for _, h := range raw.Hosts {
		for _, k := range []string{"name", "role", "netns", "dev", "ipv4", "ipv6"} {
			if s, ok := h[k].(string); !ok || s == "" {
				t.Errorf("host %v: field %q missing or empty", h, k)
			}
		}
	}
	if kv1 := st.Hosts[2]; kv1.Name != "kv1" || kv1.Role != "kv" || kv1.IPv4 != "198.18.2.2" {
		t.Errorf("kv1 in status: %+v", kv1)
	}
	stdout, _, code := c.run("status")
	if code != 0 || !strings.Contains(stdout, "NAME") || !strings.Contains(stdout, up.Prefix+"-kv1") {
		t.Errorf("lab status: exit %d\n%s", code, stdout)
	}
	stdout, _, code = c.run("down")
	if code != 0 || !strings.Contains(stdout, "removed lab "+up.Prefix) {
		t.Errorf("lab down: exit %d %q", code, stdout)
	}
	if left := namespaces(t, up.Prefix); len(left) > 0 {
		t.Errorf("lab down left %v", left)
	}
	stdout, _, code = c.run("down")
	if code != 0 || !strings.Contains(stdout, "no lab was up") {
		t.Errorf("second lab down: exit %d %q", code, stdout)
	}
}

// TestLabServersAndPlaceholders: lab status shows which XDP program each
// host's device carries; a store killed with SIGKILL leaves its device
// without one, which status flags and lab up repairs; lab down stops the
// serve --lab processes (cleanly, with SIGINT) before removing the lab.
func TestLabServersAndPlaceholders(t *testing.T) {
	c := newLabCLI(t)
	var up statusReport
	c.runJSON(&up, "up", "--backends", "1", "--json")
	xdpOf := func(host string) string {
		t.Helper()
		var st statusReport
		c.runJSON(&st, "status", "--json")
		for _, h := range st.Hosts {
			if h.Name == host {
				return h.XDP
			}
		}
		t.Fatalf("no host %s in %+v", host, st)
		return ""
	}
	kvd := c.start("kv", "serve", "--lab")
	if got := xdpOf("kv1"); got != "kv_xdp" {
		t.Errorf("kv1's XDP with the store serving: %q, want kv_xdp", got)
	}
	kvd.cmd.Process.Kill()
	<-kvd.exited
	if got := xdpOf("kv1"); got != "" {
		t.Errorf("kv1's XDP after the store was killed: %q, want none", got)
	}
	if out, _, _ := c.run("status"); !strings.Contains(out, "none!") || !strings.Contains(out, "'lab up' puts it back") {
		t.Errorf("lab status does not flag the missing placeholder:\n%s", out)
	}
	out, errOut, code := c.run("up")
	if code != 0 || !strings.Contains(out, "put the XDP_PASS placeholder back on") {
		t.Errorf("lab up after a killed store: exit %d, %s%s", code, out, errOut)
	}
	if got := xdpOf("kv1"); got != netlab.PlaceholderName {
		t.Errorf("kv1's XDP after lab up: %q, want the placeholder", got)
	}

	kvd = c.start("kv", "serve", "--lab")
	pxd := c.start("proxy", "serve", "--lab")
	out, errOut, code = c.run("down")
	if code != 0 || !strings.Contains(out, "stopped lab kv serve --lab (pid") || !strings.Contains(out, "stopped lab proxy serve --lab (pid") {
		t.Errorf("lab down with servers: exit %d, %s%s", code, out, errOut)
	}
	for _, d := range []*daemon{kvd, pxd} {
		select {
		case <-d.exited:
			if code := d.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(d.stdout.String(), "detached from") {
				t.Errorf("%s after lab down: exit %d, %s%s", d.name, code, d.stdout, d.stderr)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s still runs after lab down", d.name)
		}
	}
	if left := namespaces(t, up.Prefix); len(left) > 0 {
		t.Errorf("lab down left %v", left)
	}
}
