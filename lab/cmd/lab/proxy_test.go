package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/proxy"
)

// output collects a daemon's stdout or stderr and tells when its first
// line is complete.
type output struct {
	mu   sync.Mutex
	b    bytes.Buffer
	line chan struct{}
	once sync.Once
}

func newOutput() *output { return &output{line: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.Write(p)
	if bytes.IndexByte(o.b.Bytes(), '\n') >= 0 {
		o.once.Do(func() { close(o.line) })
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// daemon is a serve command running in the background.
type daemon struct {
	t              *testing.T
	name           string
	cmd            *exec.Cmd
	stdout, stderr *output
	exited         chan struct{}
}

// start runs lab args in the background and returns once it has printed
// its first line, which every serve command prints when it serves. A
// daemon still running when the test ends is killed.
func (c *labCLI) start(args ...string) *daemon {
	c.t.Helper()
	d := &daemon{t: c.t, name: "lab " + strings.Join(args, " "), cmd: c.command(args...),
		stdout: newOutput(), stderr: newOutput(), exited: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	// Dies with the test binary, whatever becomes of it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	c.t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
	})
	select {
	case <-d.stdout.line:
	case <-d.exited:
		c.t.Fatalf("%s exited with %v before serving: %s", d.name, d.cmd.ProcessState, d.stderr)
	case <-time.After(time.Minute):
		c.t.Fatalf("%s printed nothing for a minute: %s", d.name, d.stderr)
	}
	return d
}

// interrupt sends SIGINT, as Ctrl-C does, and returns the exit status and
// what the daemon printed.
func (d *daemon) interrupt() (code int, stdout, stderr string) {
	d.t.Helper()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("%s still running 30 s after SIGINT", d.name)
	}
	return d.cmd.ProcessState.ExitCode(), d.stdout.String(), d.stderr.String()
}

// TestProxyCLI runs the proxy as a user would: `lab up`, `lab kv serve` on
// each kv host, `lab proxy serve` in front of them, memcached requests from
// the client over IPv4 and IPv6, `lab proxy stats`, Ctrl-C, and the same
// again with `lab proxy serve --lab`.
func TestProxyCLI(t *testing.T) {
	c := newLabCLI(t)
	const port = "11211"
	serve := []string{"proxy", "serve", "--dev", "x", "--listen", "198.18.1.1:" + port, "--backend"}
	for _, e := range []struct {
		code int
		msg  string
		args []string
	}{
		{2, "two IPv4 addresses", append(serve, "198.18.2.2:11211,198.18.3.2")},
		{2, "two IPv6 addresses", append(serve, "[fd00:0:0:2::2]:11211,fd00:0:0:3::2")},
		{2, "not an IP address", append(serve, "198.18.2.2:11211,[fd00:0:0:2::2]:11211")},
		{2, "not an IP address", append(serve, "198.18.2.2:11211,")},
		{2, "want ADDR:PORT[:WEIGHT][,ADDR]", append(serve, "198.18.2.2")},
		{2, "weight must be", append(serve, "198.18.2.2:11211:0,fd00:0:0:2::2")},
		{2, "port 0", append(serve, "198.18.2.2:0")},
		{2, "usage: lab proxy serve", []string{"proxy", "serve"}},
		{2, "--lab gives", []string{"proxy", "serve", "--lab", "--dev", "x"}},
		{2, "usage: lab proxy stats", []string{"proxy", "stats", "--lab", "--netns", "x"}},
		{1, "no lab is up", []string{"proxy", "serve", "--lab"}},
		{1, "no lab is up", []string{"kv", "serve", "--lab"}},
		{2, "--lab gives each store's", []string{"kv", "serve", "--lab", "--dev", "x"}},
		{1, "no lab is up", []string{"proxy", "stats", "--lab"}},
		{1, "is `lab proxy serve --netns xdplab-test-nowhere` running?", []string{"proxy", "stats", "--netns", "xdplab-test-nowhere"}},
	} {
		c.fails(e.code, e.msg, e.args...)
	}

	var lab statusReport
	c.runJSON(&lab, "up", "--backends", "3", "--json")
	var px statusHost
	var kvs []statusHost
	for _, h := range lab.Hosts {
		switch h.Role {
		case "proxy":
			px = h
		case "kv":
			kvs = append(kvs, h)
		}
	}
	// A proxy killed mid-test leaves its stats socket; the daemons' kill
	// (registered later) runs first.
	t.Cleanup(func() { os.Remove(statsSocket(px.NetNS)) })

	// Our store on each kv host, and the proxy in front with each backend
	// at both its addresses.
	var stores []*daemon
	serve = []string{"proxy", "serve", "--netns", px.NetNS, "--dev", px.Dev,
		"--listen", net.JoinHostPort(px.IPv4, port), "--listen", net.JoinHostPort(px.IPv6, port)}
	var servers []proxy.Server
	var names []string
	for _, kv := range kvs {
		stores = append(stores, c.start("kv", "serve", "--netns", kv.NetNS, "--dev", kv.Dev))
		arg := net.JoinHostPort(kv.IPv4, port) + "," + kv.IPv6
		serve = append(serve, "--backend", arg)
		b, err := parseBackend(arg)
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, b.Server)
		names = append(names, backendName(b))
	}
	proxyd := c.start(serve...)

	// Clients in the client's namespace, one per family.
	topo, _, err := labDir(c.stateDir).open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Detach)
	dial := func(host string) *memcache.Client {
		var mc *memcache.Client
		err := topo.Host("client").Do(func() (err error) {
			mc, err = memcache.DialUDP(net.JoinHostPort(host, port))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mc.Close() })
		return mc
	}
	v4, v6 := dial(px.IPv4), dial(px.IPv6)

	// Two keys on each backend, by the ring nutcracker would build.
	ring, err := proxy.NewRing(servers, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([][]string, len(servers))
	for i, full := 0, 0; full < len(servers); i++ {
		k := "key-" + strconv.Itoa(i)
		if b := ring.Lookup([]byte(k)); len(keys[b]) < 2 {
			if keys[b] = append(keys[b], k); len(keys[b]) == 2 {
				full++
			}
		}
	}
	ctx := t.Context()
	set := func(mc *memcache.Client, key, val string) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := mc.Set(tctx, memcache.Item{Key: key, Value: []byte(val)}); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
	}
	get := func(mc *memcache.Client, want map[string]string, keys ...string) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		items, err := mc.Get(tctx, keys...)
		var got []string
		for _, it := range items {
			got = append(got, it.Key+"="+string(it.Value))
		}
		var exp []string
		for _, k := range keys {
			exp = append(exp, k+"="+want[k])
		}
		if err != nil || strings.Join(got, " ") != strings.Join(exp, " ") {
			t.Fatalf("get %v: %v %v; want %v", keys, got, err, exp)
		}
	}
	stats := func(args ...string) statsReply {
		t.Helper()
		var st statsReply
		c.runJSON(&st, append([]string{"proxy", "stats", "--json"}, args...)...)
		if len(st.Backends) != len(servers) || len(st.XDP.Backends) < len(servers) || len(st.Slow.Backends) != len(servers) {
			t.Fatalf("stats for %d backends: %+v", len(servers), st)
		}
		return st
	}
	// moved checks the counters between two snapshots: every request
	// forwarded in XDP, each backend's replies brought back in XDP.
	moved := func(phase string, a, b statsReply, perBackend, slow uint64) {
		t.Helper()
		x, y := a.XDP, b.XDP
		if y.Requests-x.Requests != y.Forwarded-x.Forwarded+slow || y.Slow-x.Slow != slow || y.Replies-x.Replies != y.Forwarded-x.Forwarded {
			t.Errorf("%s: xdp counters went from %+v to %+v; want every request forwarded and answered in XDP, %d to the slow path", phase, x, y, slow)
		}
		for i := range servers {
			if r := y.Backends[i].Requests - x.Backends[i].Requests; r != perBackend {
				t.Errorf("%s: backend %s: %d requests forwarded in XDP, want %d", phase, names[i], r, perBackend)
			}
		}
	}
	zero := stats("--netns", px.NetNS)
	if !slices.Equal(zero.Backends, names) || !slices.Equal(zero.Live, []bool{true, true, true}) {
		t.Errorf("stats name backends %q live %v; want %q, all live", zero.Backends, zero.Live, names)
	}

	// IPv4: set and get each key.
	want := map[string]string{}
	for _, ks := range keys {
		for _, k := range ks {
			want[k] = "via IPv4: " + k
			set(v4, k, want[k])
			get(v4, want, k)
		}
	}
	afterV4 := stats("--netns", px.NetNS)
	moved("IPv4", zero, afterV4, 4, 0)

	// IPv6: the same keys are on the same backends (the second address is
	// the same backend), and requests stay in XDP: the backends have an
	// IPv6 address.
	for _, ks := range keys {
		for _, k := range ks {
			get(v6, want, k)
			want[k] = "via IPv6: " + k
			set(v6, k, want[k])
			get(v6, want, k)
		}
	}
	afterV6 := stats("--netns", px.NetNS)
	moved("IPv6", afterV4, afterV6, 6, 0)
	if afterV6.Slow.Requests != 0 {
		t.Errorf("slow path got %d datagrams, want none", afterV6.Slow.Requests)
	}

	// A get spanning the backends is the slow path's, split and merged.
	get(v6, want, keys[0][0], keys[1][0], keys[2][0])
	split := stats("--lab") // the same proxy, found through the lab
	moved("split get", afterV6, split, 0, 1)
	if s := split.Slow; s.Requests != 1 || s.Splits != 1 {
		t.Errorf("slow path after a get spanning backends: %+v; want 1 datagram, split", s)
	}

	out, _, code := c.run("proxy", "stats", "--netns", px.NetNS)
	if code != 0 || !strings.Contains(out, names[2]) || !strings.Contains(out, "1 gets split") {
		t.Errorf("lab proxy stats: exit %d\n%s", code, out)
	}

	// A second proxy in the namespace is refused, and leaves the first
	// one serving.
	c.fails(1, "a proxy already serves in netns "+px.NetNS, serve...)
	get(v4, want, keys[1][1])
	stats("--netns", px.NetNS)

	if fi, err := os.Stat(statsSocket(px.NetNS)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("stats socket: %v %v, want mode 0600 (root's only)", fi.Mode(), err)
	}
	// Another user reading the stats is told it needs root, not that no
	// proxy runs.
	for d := filepath.Dir(c.bin); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // the test's own temp dirs, so nobody can run lab
	}
	nobody := c.command("proxy", "stats", "--netns", px.NetNS)
	nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := nobody.CombinedOutput(); err == nil || !strings.Contains(string(out), "run lab proxy stats with sudo") {
		t.Errorf("lab proxy stats as nobody: %v, %q", err, out)
	}

	// Ctrl-C: serve detaches, puts the placeholders back and exits 0.
	code, out, errOut := proxyd.interrupt()
	if code != 0 || !strings.Contains(out, "detached from") || errOut != "" {
		t.Errorf("lab proxy serve after SIGINT: exit %d\n%s%s", code, out, errOut)
	}
	for _, i := range topo.Host("proxy").Ifaces {
		var has bool
		if err := i.Host.Do(func() (err error) { has, err = netlab.HasXDPPass(i.Name); return err }); err != nil || !has {
			t.Errorf("proxy's %s after serve: XDP_PASS placeholder %v, %v", i.Name, has, err)
		}
	}
	c.fails(1, "lab proxy serve --netns "+px.NetNS, "proxy", "stats", "--netns", px.NetNS)

	for _, d := range stores {
		if code, out, errOut := d.interrupt(); code != 0 {
			t.Errorf("%s after SIGINT: exit %d\n%s%s", d.name, code, out, errOut)
		}
	}

	// --lab stands for all of the above: one store process for every kv
	// host (empty stores: set the keys again), and the proxy.
	storesd := c.start("kv", "serve", "--lab")
	proxyd = c.start("proxy", "serve", "--lab")
	if line := proxyd.stdout.String(); !strings.Contains(line, strings.Join(names, ", ")) {
		t.Errorf("lab proxy serve --lab: %q; want the backends %q", line, names)
	}
	for k, v := range want {
		set(v4, k, v)
	}
	before := stats("--lab")
	for _, ks := range keys {
		get(v6, want, ks...)
	}
	moved("--lab, IPv6", before, stats("--lab"), 1, 0)
	if code, out, errOut := proxyd.interrupt(); code != 0 {
		t.Errorf("lab proxy serve --lab after SIGINT: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = storesd.interrupt()
	if code != 0 || strings.Count(out, "serving memcached on") != len(kvs) || strings.Count(out, "detached from") != len(kvs) {
		t.Errorf("lab kv serve --lab: exit %d, want a store served and detached on each of %d kv hosts:\n%s%s", code, len(kvs), out, errOut)
	}
	for _, kv := range kvs {
		var has bool
		h := topo.Host(kv.Name)
		if err := h.Do(func() (err error) { has, err = netlab.HasXDPPass(kv.Dev); return err }); err != nil || !has {
			t.Errorf("%s's %s after lab kv serve --lab: XDP_PASS placeholder %v, %v", kv.Name, kv.Dev, has, err)
		}
	}
	v4.Close()
	v6.Close()
	topo.Detach()
	if out, errOut, code := c.run("down"); code != 0 {
		t.Errorf("lab down: exit %d\n%s%s", code, out, errOut)
	}
	if left := namespaces(t, lab.Prefix); len(left) > 0 {
		t.Errorf("lab down left %v", left)
	}
}

// TestPrintProxyStats: `lab proxy stats` prints every counter, the drops
// and refusals that tell of an attack included.
func TestPrintProxyStats(t *testing.T) {
	c := proxy.CPUStats{Requests: 11, Forwarded: 12, Replies: 13, Slow: 14, NoBackend: 15, NoRoute: 16,
		ReflectDrop: 17, SpoofedReply: 18, FlowLimit: 19}
	st := statsReply{Backends: []string{"198.18.2.2:11211"}, AllStats: proxy.AllStats{
		XDP: proxy.Stats{Requests: 21, Forwarded: 22, Replies: 23, Slow: 24, NoBackend: 25, NoRoute: 26,
			ReflectDrop: 27, SpoofedReply: 28, FlowLimit: 29, PerCPU: []proxy.CPUStats{c}},
		Slow: proxy.SlowStats{Requests: 31, Splits: 32, Versions: 33, Errors: 34, Refused: 35},
	}}
	var b bytes.Buffer
	printProxyStats(&b, st)
	out := b.String()
	rows := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		rows[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		"0 11 12 13 14 15 16 17 18 19",
		"all 21 22 23 24 25 26 27 28 29",
	} {
		if !rows[want] {
			t.Errorf("lab proxy stats prints no row %q:\n%s", want, out)
		}
	}
	for _, want := range []string{"reflect drops", "spoofed replies", "over flow budget", "35 refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab proxy stats prints no %q:\n%s", want, out)
		}
	}
}
