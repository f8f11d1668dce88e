package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/xdplab/xdplab/lab/netlab"
	"github.com/xdplab/xdplab/lab/proxy"
)

func init() {
	register(command{name: "proxy serve", summary: "run the XDP memcached proxy in front of backends", run: proxyServe})
	register(command{name: "proxy stats", summary: "show a running proxy's counters", run: proxyStats})
}

// statsDir holds one socket per running proxy, named after its namespace:
// `lab proxy stats` reads the counters from the process that owns them.
const statsDir = "/run/xdplab"

func statsSocket(ns string) string {
	if ns == "" {
		ns = "default"
	}
	return filepath.Join(statsDir, "proxy-"+ns+".sock")
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// backendForms is the --backend syntax, for usage errors.
const backendForms = `ADDR:PORT[:WEIGHT][,ADDR] (IPv6 in brackets), or nutcracker's "host:port:weight [name]"[,ADDR]`

// parseBackend takes ADDR:PORT[:WEIGHT] (IPv6 in brackets) or nutcracker's
// "host:port:weight [name]", then optionally ",ADDR": the backend's address
// of the other family, on the same port. Only the first address is the
// backend's ketama identity, so placement stays what nutcracker makes of
// the same list without the second addresses.
func parseBackend(s string) (proxy.Backend, error) {
	first, other, dual := strings.Cut(s, ",")
	srv, err := parseServer(first)
	if err != nil {
		return proxy.Backend{}, fmt.Errorf("--backend %q: %w", s, err)
	}
	b, err := proxy.BackendFor(srv)
	if err == nil && dual {
		a, perr := netip.ParseAddr(other)
		if perr != nil {
			err = fmt.Errorf("%q after the comma is not an IP address (it takes no port: the backend's serves both)", other)
		} else {
			b, err = b.WithAddr(a)
		}
	}
	if err != nil {
		return proxy.Backend{}, fmt.Errorf("--backend %q: %w", s, err)
	}
	return b, nil
}

func parseServer(s string) (proxy.Server, error) {
	if strings.Contains(s, " ") {
		return proxy.ParseServer(s) // nutcracker's, with a name
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return proxy.Server{Host: ap.Addr().Unmap().String(), Port: ap.Port(), Weight: 1}, nil
	}
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		if ap, err := netip.ParseAddrPort(s[:i]); err == nil {
			w, err := strconv.ParseUint(s[i+1:], 10, 32)
			if err != nil || w == 0 {
				return proxy.Server{}, errors.New("weight must be a whole number from 1")
			}
			return proxy.Server{Host: ap.Addr().Unmap().String(), Port: ap.Port(), Weight: uint32(w)}, nil
		}
	}
	srv, err := proxy.ParseServer(s)
	if err != nil {
		return srv, errors.New("want " + backendForms)
	}
	return srv, nil
}

// backendName is b for people: its server, and its other-family address
// if it has one.
func backendName(b proxy.Backend) string {
	name := b.Server.String()
	ap, _ := b.Server.AddrPort()
	for _, a := range []netip.Addr{b.IPv4, b.IPv6} {
		if a.IsValid() && a != ap.Addr() {
			name += "," + a.String()
		}
	}
	return name
}

// labProxy is what --lab stands for: the proxy host of the lab `lab up`
// built, its interface towards the client, port 11211 on that interface's
// addresses, and each kv host at its IPv4 address (its ring identity, as
// nutcracker would be given it) and its IPv6 one.
type labProxy struct {
	netns, dev        string
	listens, backends []string
}

func labProxyFlags() (labProxy, error) {
	var lp labProxy
	r, err := labStatus()
	if err != nil {
		return lp, err
	}
	port := strconv.Itoa(proxy.DefaultPort)
	for _, h := range r.Hosts {
		switch h.Role {
		case "proxy":
			lp.netns, lp.dev = h.NetNS, h.Dev
			lp.listens = append(lp.listens, net.JoinHostPort(h.IPv4, port), net.JoinHostPort(h.IPv6, port))
		case "kv":
			lp.backends = append(lp.backends, net.JoinHostPort(h.IPv4, port)+","+h.IPv6)
		}
	}
	return lp, nil
}

// statsReply is what the stats socket sends.
type statsReply struct {
	Backends []string
	proxy.AllStats
}

func proxyServe(args []string) error {
	fs := newFlags("proxy serve")
	dev := fs.String("dev", "", "interface clients reach the proxy through (required)")
	ns := fs.String("netns", "", "named network namespace (/run/netns/NAME) to serve in")
	var listens, backendArgs multiFlag
	fs.Var(&listens, "listen", "ADDR:PORT clients send to, one per address family (required)")
	fs.Var(&backendArgs, "backend", "backend "+backendForms+"; repeat for each. The ADDR after the comma is the backend's address of the other family, so that clients of both families stay in XDP; the first address alone places it on the ring, as in nutcracker")
	config := fs.String("config", "", "nutcracker YAML config with one pool (listen, servers, timeout); instead of --listen and --backend")
	useLab := fs.Bool("lab", false, "serve in the lab that 'lab up' built: on its proxy host, port 11211 of the addresses towards the client, with every kv host (port 11211, both addresses) as a backend")
	newFlows := fs.Uint("new-flows", proxy.DefaultNewFlows, "client flows each CPU may start a second in XDP (a spoofed flood cannot turn the 65536 over faster); requests over it go to the slow path")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *newFlows == 0 || *newFlows > 1<<31 {
		return usageError{"--new-flows must be 1..2^31"}
	}
	if *useLab {
		if *dev != "" || *ns != "" || *config != "" || len(listens) > 0 || len(backendArgs) > 0 {
			return usageError{"--lab gives the namespace, interface, listen addresses and backends: drop --netns, --dev, --listen, --backend and --config"}
		}
		if err := needRoot("proxy serve"); err != nil {
			return err
		}
		lp, err := labProxyFlags()
		if err != nil {
			return err
		}
		*ns, *dev, listens, backendArgs = lp.netns, lp.dev, lp.listens, lp.backends
		unregister, err := currentLabDir().serving("lab proxy serve --lab")
		if err != nil {
			return err
		}
		defer unregister()
	}
	if *dev == "" || fs.NArg() > 0 || *config == "" && (len(listens) == 0 || len(backendArgs) == 0) {
		return usageError{"usage: lab proxy serve --dev IFACE (--listen ADDR:PORT --backend ADDR:PORT[:WEIGHT][,ADDR] ... | --config FILE) [--netns NAME], or lab proxy serve --lab"}
	}
	var cfg proxy.ServeConfig
	if *config != "" {
		if len(listens) > 0 || len(backendArgs) > 0 {
			return usageError{"--config gives the listen address and the backends: drop --listen and --backend"}
		}
		data, err := os.ReadFile(*config)
		if err != nil {
			return usageError{err.Error()}
		}
		if cfg, err = proxy.ParseConfig(data); err != nil {
			return usageError{fmt.Sprintf("%s: %v", *config, err)}
		}
		for _, a := range []netip.Addr{cfg.Listen4, cfg.Listen6} {
			if a.IsValid() {
				listens = append(listens, netip.AddrPortFrom(a, cfg.Port).String())
			}
		}
	}
	for _, l := range listens {
		if *config != "" {
			break // the config set them
		}
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return usageError{fmt.Sprintf("--listen %q: want ADDR:PORT (IPv6 in brackets)", l)}
		}
		if cfg.Port != 0 && ap.Port() != cfg.Port {
			return usageError{"--listen: every address must have the same port"}
		}
		cfg.Port = ap.Port()
		a := ap.Addr().Unmap()
		switch {
		case a.Is4() && !cfg.Listen4.IsValid():
			cfg.Listen4 = a
		case a.Is6() && !cfg.Listen6.IsValid():
			cfg.Listen6 = a
		default:
			return usageError{"--listen: at most one IPv4 and one IPv6 address"}
		}
	}
	cfg.NewFlows = uint32(*newFlows)
	for _, s := range backendArgs {
		b, err := parseBackend(s)
		if err != nil {
			return usageError{err.Error()}
		}
		cfg.Backends = append(cfg.Backends, b)
	}
	var names []string
	for _, b := range cfg.Backends {
		names = append(names, backendName(b))
	}
	if err := needRoot("proxy serve"); err != nil {
		return err
	}

	// Claim the namespace's stats socket before loading anything, so a
	// second proxy there fails without touching the first one's XDP.
	sock := statsSocket(*ns)
	if err := os.MkdirAll(statsDir, 0o755); err != nil {
		return fmt.Errorf("stats socket: %w", err)
	}
	// The lock makes the check below and the claim one step: two serves
	// started at once cannot both find the socket free.
	lock, err := os.OpenFile(sock+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("stats socket: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("a proxy already serves in %s (it holds %s): stop it first", nsName(*ns), lock.Name())
	}
	defer os.Remove(lock.Name())
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		return fmt.Errorf("a proxy already serves in %s (%s answers): stop it first", nsName(*ns), sock)
	}
	os.Remove(sock) // left by a proxy that crashed
	sl, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("stats socket: %w", err)
	}
	// Root's only, whatever the umask: the counters name the backends.
	if err := os.Chmod(sock, 0o600); err != nil {
		sl.Close()
		return fmt.Errorf("stats socket: %w", err)
	}
	defer os.Remove(sock)
	defer sl.Close()

	// Load, bind and attach inside the namespace; all of it stays there
	// after the thread switches back.
	var p *proxy.Proxy
	var devs []string
	var detach func() error
	err = inNetns(*ns, func() error {
		var err error
		if p, err = proxy.Start(cfg); err != nil {
			return err
		}
		if devs, err = proxyDevs(*dev, cfg.Backends); err != nil {
			p.Close()
			return err
		}
		if detach, err = attachProxy(*ns, devs, p); err != nil {
			p.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer p.Close()
	defer func() {
		if err := detach(); err != nil {
			fmt.Fprintln(os.Stderr, "lab proxy serve: detach:", err)
		}
	}()
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			if st, err := p.Stats(); err != nil {
				fmt.Fprintln(os.Stderr, "lab proxy serve: stats:", err)
			} else {
				// A write error is the client's hang-up (another serve
				// checking that this one answers): nothing to report.
				json.NewEncoder(c).Encode(statsReply{Backends: names, AllStats: st})
			}
			c.Close()
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	where := strings.Join(devs, ", ")
	if *ns != "" {
		where += " in netns " + *ns
	}
	fmt.Printf("proxying memcached (UDP) on %s to %d backends (%s); XDP on %s; stats: lab proxy stats%s\n",
		strings.Join(listens, " and "), len(names), strings.Join(names, ", "), where, nsFlag(*ns))
	err = p.Run(ctx)
	sl.Close() // before the deferred p.Close: no stats read from closed maps
	fmt.Println("detached from", where)
	return err
}

// nsName names ns in messages.
func nsName(ns string) string {
	if ns == "" {
		return "this namespace"
	}
	return "netns " + ns
}

func nsFlag(ns string) string {
	if ns == "" {
		return ""
	}
	return " --netns " + ns
}

// proxyDevs is dev and the interfaces the FIB sends each backend's traffic
// out of: replies come back in through those, and XDP must see them.
func proxyDevs(dev string, bs []proxy.Backend) ([]string, error) {
	if _, err := netlink.LinkByName(dev); err != nil {
		return nil, fmt.Errorf("no interface %s here (see `ip link`): %w", dev, err)
	}
	devs := []string{dev}
	for _, b := range bs {
		for _, a := range []netip.Addr{b.IPv4, b.IPv6} {
			if !a.IsValid() {
				continue
			}
			routes, err := netlink.RouteGet(a.AsSlice())
			if err != nil || len(routes) == 0 {
				return nil, fmt.Errorf("no route to backend %s: %v", a, err)
			}
			l, err := netlink.LinkByIndex(routes[0].LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("route to backend %s: %w", a, err)
			}
			if name := l.Attrs().Name; name != "lo" && !slices.Contains(devs, name) {
				devs = append(devs, name)
			}
		}
	}
	return devs, nil
}

// attachProxy attaches the program to devs in native mode, each in the
// XDP_PASS placeholder's place (see `lab kv serve`); the returned func
// detaches and puts the placeholders back.
func attachProxy(ns string, devs []string, p *proxy.Proxy) (func() error, error) {
	var links []link.Link
	var took []string
	detach := func() error {
		var err error
		for _, l := range links {
			err = errors.Join(err, l.Close())
		}
		for _, d := range took {
			err = errors.Join(err, inNetns(ns, func() error { return netlab.PutXDPPass(d) }))
		}
		return err
	}
	for _, d := range devs {
		t, err := netlab.TakeXDPPass(d)
		if err != nil {
			detach()
			return nil, fmt.Errorf("inspect XDP on %s: %w", d, err)
		}
		if t {
			took = append(took, d)
		}
		nl, err := netlink.LinkByName(d)
		if err != nil {
			detach()
			return nil, err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: p.Objects.Program(), Interface: nl.Attrs().Index, Flags: link.XDPDriverMode})
		if err != nil {
			detach()
			return nil, fmt.Errorf("attach XDP to %s: %w (another XDP program there? see `ip link show %s`)", d, err, d)
		}
		links = append(links, l)
	}
	return detach, nil
}

func proxyStats(args []string) error {
	fs := newFlags("proxy stats")
	ns := fs.String("netns", "", "the namespace the proxy serves in (as given to lab proxy serve)")
	useLab := fs.Bool("lab", false, "the proxy in the lab that 'lab up' built (as 'lab proxy serve --lab' runs it)")
	asJSON := fs.Bool("json", false, "print the counters as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *useLab && *ns != "" {
		return usageError{"usage: lab proxy stats [--netns NAME | --lab] [--json]"}
	}
	if *useLab {
		if err := needRoot("proxy stats"); err != nil {
			return err
		}
		lp, err := labProxyFlags()
		if err != nil {
			return err
		}
		*ns = lp.netns
	}
	c, err := net.Dial("unix", statsSocket(*ns))
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("the proxy's stats socket %s is root's: run lab proxy stats with sudo", statsSocket(*ns))
	}
	if err != nil {
		return fmt.Errorf("no proxy answers on %s: is `lab proxy serve%s` running?", statsSocket(*ns), nsFlag(*ns))
	}
	defer c.Close()
	var st statsReply
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		return fmt.Errorf("read stats: %w", err)
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(st)
	}
	printProxyStats(os.Stdout, st)
	return nil
}

func printProxyStats(out io.Writer, st statsReply) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "backend\tlive\txdp requests\txdp replies\txdp errors\tslow requests\tslow replies\tslow errors\tslow timeouts\t")
	for i, name := range st.Backends {
		var x proxy.BackendStats
		var s proxy.SlowBackendStats
		if i < len(st.XDP.Backends) {
			x = st.XDP.Backends[i]
		}
		if i < len(st.Slow.Backends) {
			s = st.Slow.Backends[i]
		}
		live := i < len(st.Live) && st.Live[i]
		fmt.Fprintf(w, "%s\t%v\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name, live, x.Requests, x.Replies, x.Errors, s.Requests, s.Replies, s.Errors, s.Timeouts)
	}
	w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "cpu\trequests\tforwarded\treplies\tto slow path\tno backend\tno route\treflect drops\tspoofed replies\tover flow budget\t")
	row := func(name string, c proxy.CPUStats) {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name, c.Requests, c.Forwarded, c.Replies, c.Slow,
			c.NoBackend, c.NoRoute, c.ReflectDrop, c.SpoofedReply, c.FlowLimit)
	}
	for i, c := range st.XDP.PerCPU {
		row(strconv.Itoa(i), c)
	}
	x := st.XDP
	row("all", proxy.CPUStats{Requests: x.Requests, Forwarded: x.Forwarded, Replies: x.Replies, Slow: x.Slow,
		NoBackend: x.NoBackend, NoRoute: x.NoRoute, ReflectDrop: x.ReflectDrop, SpoofedReply: x.SpoofedReply, FlowLimit: x.FlowLimit})
	w.Flush()
	s := st.Slow
	fmt.Fprintf(out, "\nslow path: %d datagrams, %d gets split over backends, %d versions answered, %d error replies, %d refused (reflection risks)\n",
		s.Requests, s.Splits, s.Versions, s.Errors, s.Refused)
}
