package netlab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestParsePrefix(t *testing.T) {
	p := NewPrefix()
	got, pid, ok := ParsePrefix(p + "-client")
	if !ok || got != p || pid != os.Getpid() {
		t.Fatalf("ParsePrefix(%q) = %q, %d, %v; want %q, %d", p+"-client", got, pid, ok, p, os.Getpid())
	}
	if p2 := NewPrefix(); p2 == p {
		t.Fatalf("NewPrefix repeated %q", p)
	}
	for _, bad := range []string{"", "xl", "xl-1", "xlabc", "eth0", "xlAB-1", "xl00-1"} {
		if _, _, ok := ParsePrefix(bad); ok {
			t.Errorf("ParsePrefix(%q) accepted", bad)
		}
	}
	if err := Sweep("eth"); err == nil {
		t.Error("Sweep accepted a name outside the family")
	}
}

func TestLinkAddrs(t *testing.T) {
	a4, b4, a6, b6 := linkAddrs(300)
	want := []string{"198.19.44.1/24", "198.19.44.2/24", "fd00:0:0:12c::1/64", "fd00:0:0:12c::2/64"}
	for i, p := range []netip.Prefix{a4, b4, a6, b6} {
		if p.String() != want[i] {
			t.Errorf("linkAddrs(300)[%d] = %s, want %s", i, p, want[i])
		}
	}
	bench4 := netip.MustParsePrefix("198.18.0.0/15")
	ula := netip.MustParsePrefix("fd00::/8")
	a4, _, a6, _ = linkAddrs(MaxLinks)
	if !bench4.Contains(a4.Addr()) || !ula.Contains(a6.Addr()) {
		t.Errorf("link %d out of range: %s %s", MaxLinks, a4, a6)
	}
}

// udpEcho serves UDP echo on h at addr:port until the test ends.
func udpEcho(t *testing.T, h *Host, addr netip.Addr, port int) netip.AddrPort {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return netip.AddrPortFrom(addr, uint16(port))
}

// roundTrip sends a datagram from h to dst and waits for the same bytes.
func roundTrip(h *Host, dst netip.AddrPort, timeout time.Duration) error {
	var c *net.UDPConn
	if err := h.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	msg := []byte(fmt.Sprintf("hello %s from %s", dst, h.Name))
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("%s -> %s: %w", h.Name, dst, err)
	}
	if !bytes.Equal(buf[:n], msg) {
		return fmt.Errorf("%s -> %s: got %q", h.Name, dst, buf[:n])
	}
	return nil
}

func TestPair(t *testing.T) {
	topo := ForTest(t, PairSpec(Options{}))
	client, kv := topo.Host("client"), topo.Host("kv")
	if client == nil || kv == nil || kv.Role != "kv" {
		t.Fatalf("hosts: %+v", topo.Hosts)
	}
	for _, want := range []struct{ got, want string }{
		{kv.IPv4().String(), "198.18.1.2"}, {kv.IPv6().String(), "fd00:0:0:1::2"},
		{client.IPv4().String(), "198.18.1.1"}, {client.Dev(), topo.Prefix + "-kv"},
		{kv.Dev(), topo.Prefix + "-client"}, {kv.NetNS, topo.Prefix + "-kv"},
	} {
		if want.got != want.want {
			t.Errorf("got %s, want %s", want.got, want.want)
		}
	}
	if kv.IfaceTo("client").Peer != client.Iface(client.Dev()) || client.Ifaces[0].Peer.MAC.String() != kv.Ifaces[0].MAC.String() {
		t.Error("peer links inconsistent")
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, kv.NetNS)); err != nil {
		t.Error(err)
	}
	for _, a := range []netip.Addr{kv.IPv4(), kv.IPv6()} {
		dst := udpEcho(t, kv, a, 7007)
		if err := roundTrip(client, dst, 2*time.Second); err != nil {
			t.Error(err)
		}
	}
	// Loopback is up, and tx checksum offload is off.
	if err := kv.Do(func() error {
		dst := udpEcho(t, kv, netip.MustParseAddr("127.0.0.1"), 7008)
		on, err := txChecksum(kv.Dev())
		if err == nil && on {
			err = errors.New("tx checksum offload still on")
		}
		if rerr := roundTrip(kv, dst, time.Second); rerr != nil {
			err = rerr
		}
		return err
	}); err != nil {
		t.Error(err)
	}
	// Command runs inside the namespace, with /sys intact.
	out, err := kv.Command("cat", "/proc/net/dev").CombinedOutput()
	if err != nil || !strings.Contains(string(out), kv.Dev()+":") {
		t.Errorf("Command: %v\n%s", err, out)
	}
}

func TestStar(t *testing.T) {
	const n = 3
	topo := ForTest(t, StarSpec(n, Options{}))
	client, proxy := topo.Host("client"), topo.Host("proxy")
	backends := topo.Backends()
	if len(backends) != n || len(proxy.Ifaces) != n+1 {
		t.Fatalf("%d backends, proxy has %d ifaces", len(backends), len(proxy.Ifaces))
	}
	for _, kv := range backends {
		if kv.IfaceTo("proxy") == nil || proxy.IfaceTo(kv.Name) == nil {
			t.Fatalf("%s not linked to proxy", kv.Name)
		}
		for _, a := range []netip.Addr{kv.IPv4(), kv.IPv6()} {
			dst := udpEcho(t, kv, a, 7007)
			if err := roundTrip(client, dst, 2*time.Second); err != nil {
				t.Error(err)
			}
		}
	}
	for _, a := range []netip.Addr{proxy.IfaceTo("client").IPv4.Addr(), proxy.IfaceTo("kv2").IPv6.Addr()} {
		dst := udpEcho(t, proxy, a, 7009)
		if err := roundTrip(client, dst, 2*time.Second); err != nil {
			t.Error(err)
		}
	}
}

// leftovers lists namespaces and root-namespace links whose names start
// with prefix.
func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	var left []string
	ents, _ := os.ReadDir(NetnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			left = append(left, "netns "+e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			left = append(left, "link "+l.Attrs().Name)
		}
	}
	return left
}

func TestCloseRemovesEverything(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	topo, err := NewStar(2, Options{PeerXDP: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	if len(leftovers(t, topo.Prefix)) != 3+1 {
		t.Errorf("before Close: %v", leftovers(t, topo.Prefix))
	}
	// A process left running inside would keep its namespace alive.
	sleep := topo.Host("kv1").Command("sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleep.Wait() }()
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		sleep.Process.Kill()
		t.Error("Close left a process running in a namespace")
	}
	if left := leftovers(t, topo.Prefix); len(left) > 0 {
		t.Errorf("after Close: %v", left)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if runs, _ := Runs(); runs[topo.Prefix] {
		t.Errorf("Runs still lists %s", topo.Prefix)
	}
}

func TestSpecErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// Building over an existing run fails and leaves that run intact.
	topo := ForTest(t, PairSpec(Options{}))
	if dup, err := New(PairSpec(Options{Prefix: topo.Prefix})); err == nil {
		dup.Close()
		t.Error("New over an existing prefix succeeded")
	}
	if err := roundTrip(topo.Host("client"), udpEcho(t, topo.Host("kv"), topo.Host("kv").IPv4(), 7012), 2*time.Second); err != nil {
		t.Errorf("existing run damaged: %v", err)
	}
	for name, s := range map[string]Spec{
		"no hosts":     {},
		"bad name":     {Hosts: []HostSpec{{Name: "Client"}}},
		"dup host":     {Hosts: []HostSpec{{Name: "a"}, {Name: "a"}}},
		"unknown link": {Hosts: []HostSpec{{Name: "a"}}, Links: []LinkSpec{{A: "a", B: "b"}}},
		"bad gateway":  {Hosts: []HostSpec{{Name: "a", Gateway: "b"}, {Name: "b"}}},
		"bad prefix":   {Prefix: "foo", Hosts: []HostSpec{{Name: "a"}}},
	} {
		if topo, err := New(s); err == nil {
			topo.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// Helper processes for the crash and failure tests: they run this test
// binary again with NETLAB_HELPER set.
const helperEnv = "NETLAB_HELPER"

func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "crash":
		// Build a topology with a process in it, then die without cleanup.
		topo, err := NewPair(Options{PeerXDP: true})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		if err := topo.Host("kv").Command("sleep", "600").Start(); err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println("prefix:", topo.Prefix)
		os.Exit(3)
	case "fail":
		topo := ForTest(t, PairSpec(Options{}))
		fmt.Println("prefix:", topo.Prefix)
		t.Fatal("failing on purpose")
	default:
		t.Skip("not a test by itself: the child process TestSweepAfterCrash and friends start (" + helperEnv + " set)")
	}
}

// runHelper runs TestHelperProcess in mode and returns the prefix it
// printed.
func runHelper(t *testing.T, mode string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("helper %s succeeded:\n%s", mode, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "prefix: "); ok {
			return p
		}
	}
	t.Fatalf("helper %s printed no prefix (%v):\n%s", mode, err, out)
	return ""
}

func TestSweepAfterCrash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	prefix := runHelper(t, "crash")
	t.Cleanup(func() { Sweep(prefix) })
	if len(leftovers(t, prefix)) != 2 {
		t.Fatalf("crashed run left %v, want its 2 namespaces", leftovers(t, prefix))
	}
	ns := filepath.Join(NetnsDir, prefix+"-kv")
	if procs := procsIn(t, ns); len(procs) != 1 {
		t.Fatalf("processes in %s: %v, want the helper's sleep", ns, procs)
	}
	runs, err := Runs()
	if err != nil {
		t.Fatal(err)
	}
	if alive, ok := runs[prefix]; !ok || alive {
		t.Fatalf("Runs()[%s] = %v, %v; want dead", prefix, alive, ok)
	}
	swept, err := SweepStale()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range swept {
		found = found || p == prefix
	}
	if !found {
		t.Errorf("SweepStale swept %v, not %s", swept, prefix)
	}
	if left := leftovers(t, prefix); len(left) > 0 {
		t.Errorf("after sweep: %v", left)
	}
	// A live run is left alone.
	topo := ForTest(t, PairSpec(Options{}))
	if _, err := SweepStale(); err != nil {
		t.Fatal(err)
	}
	if len(leftovers(t, topo.Prefix)) != 2 {
		t.Errorf("SweepStale touched the live run %s", topo.Prefix)
	}
}

func TestDetachedRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	prefix := NewDetachedPrefix()
	if p, pid, ok := ParsePrefix(prefix); !ok || p != prefix || pid != 0 {
		t.Fatalf("ParsePrefix(%q) = %q, %d, %v", prefix, p, pid, ok)
	}
	topo, err := New(PairSpec(Options{Prefix: prefix, PeerXDP: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	if runs, _ := Runs(); !runs[prefix] {
		t.Errorf("Runs()[%s] = false, want a detached run counted live", prefix)
	}
	if _, err := SweepStale(); err != nil {
		t.Fatal(err)
	}
	if len(leftovers(t, prefix)) != 2 {
		t.Fatalf("SweepStale touched detached run %s", prefix)
	}
	if err := Sweep(prefix); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, prefix); len(left) > 0 {
		t.Errorf("after Sweep: %v", left)
	}
	// Close after an outside sweep has nothing left to do, and says so
	// quietly; the host is unusable.
	if err := topo.Close(); err != nil {
		t.Errorf("Close after Sweep: %v", err)
	}
	if err := topo.Host("kv").Do(func() error { return nil }); err == nil {
		t.Error("Do on a closed topology succeeded")
	}
}

func procsIn(t *testing.T, nsPath string) []string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `want=$(stat -L -c %i `+nsPath+`); for p in /proc/[0-9]*; do [ "$(stat -L -c %i $p/ns/net 2>/dev/null)" = "$want" ] && cat $p/comm; done; true`).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

func TestForTestCleansUpOnFailure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	prefix := runHelper(t, "fail")
	if left := leftovers(t, prefix); len(left) > 0 {
		Sweep(prefix)
		t.Errorf("failed test left %v", left)
	}
}

func TestNewCleansUpOnFailure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// Host a's interface to "e1" is named PREFIX-e1, and so would be its
	// second one, to a host whose name is too long: the second link fails
	// after three namespaces and a veth exist.
	prefix := NewPrefix()
	_, err := New(Spec{
		Prefix: prefix,
		Hosts:  []HostSpec{{Name: "a"}, {Name: "e1"}, {Name: "verylongname"}},
		Links:  []LinkSpec{{A: "a", B: "e1"}, {A: "a", B: "verylongname"}},
	})
	if err == nil {
		t.Fatal("New succeeded despite clashing interface names")
	}
	t.Log(err)
	if left := leftovers(t, prefix); len(left) > 0 {
		Sweep(prefix)
		t.Errorf("failed New left %v", left)
	}
}

// TestHostGRO: GRO is on for the interfaces of a host that asks for it,
// and stays off (a veth's default) elsewhere; traffic flows either way.
func TestHostGRO(t *testing.T) {
	topo := ForTest(t, Spec{
		Hosts: []HostSpec{{Name: "client", Role: "client", GRO: true}, {Name: "kv", Role: "kv"}},
		Links: []LinkSpec{{A: "client", B: "kv"}},
	})
	for _, c := range []struct {
		h    *Host
		want bool
	}{{topo.Host("client"), true}, {topo.Host("kv"), false}} {
		var on bool
		if err := c.h.Do(func() (err error) { on, err = GRO(c.h.Dev()); return err }); err != nil || on != c.want {
			t.Errorf("%s: GRO %v, %v; want %v", c.h.Name, on, err, c.want)
		}
	}
	kv := topo.Host("kv")
	if err := roundTrip(topo.Host("client"), udpEcho(t, kv, kv.IPv4(), 7009), 2*time.Second); err != nil {
		t.Error(err)
	}
}
