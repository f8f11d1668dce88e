package peer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/xdplab/xdplab/lab/netlab"
)

// NutcrackerOptions configure StartNutcracker. Zero values pick defaults.
type NutcrackerOptions struct {
	// AutoEjectHosts takes a backend out of the ring after
	// ServerFailureLimit consecutive failures, for ServerRetryTimeout.
	AutoEjectHosts     bool
	ServerFailureLimit int           // default 2
	ServerRetryTimeout time.Duration // default 30s (nutcracker's own default)
	// Timeout for backend requests; default 1s. Zero in nutcracker means
	// wait forever, which hangs tests on a dead backend.
	Timeout time.Duration
	// StatsPort for nutcracker's stats listener, bound to the listen
	// address; default 22222. Set it apart to run two in one host.
	StatsPort int
	// Binary; default /usr/sbin/nutcracker, else nutcracker from $PATH.
	Binary string
	// Args are appended to the command line (e.g. "-v", "11").
	Args []string
}

// StartNutcracker runs nutcracker (twemproxy) in h's namespace as a
// memcached proxy listening on listen, with ketama distribution and the
// fnv1a_32 hash over backends. Each backend is "ip:port", or nutcracker's
// own "ip:port:weight [name]" (weight defaults to 1; ketama hashes the
// name, or "ip:port" without one). It returns once listen accepts TCP
// connections. Cancelling ctx kills it; Stop kills it, waits and removes
// its config.
func StartNutcracker(ctx context.Context, h *netlab.Host, listen netip.AddrPort, backends []string, o NutcrackerOptions) (*Process, error) {
	bin := o.Binary
	if bin == "" {
		bin = "/usr/sbin/nutcracker"
	}
	bin, err := findBinary(bin, "nutcracker")
	if err != nil {
		return nil, err
	}
	if len(backends) == 0 {
		return nil, fmt.Errorf("nutcracker: no backends")
	}
	if o.ServerFailureLimit == 0 {
		o.ServerFailureLimit = 2
	}
	if o.ServerRetryTimeout == 0 {
		o.ServerRetryTimeout = 30 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	if o.StatsPort == 0 {
		o.StatsPort = 22222
	}
	var servers []string
	for _, b := range backends {
		s, err := nutcrackerServer(b)
		if err != nil {
			return nil, fmt.Errorf("nutcracker: %w", err)
		}
		servers = append(servers, s)
	}
	dir, err := os.MkdirTemp("", "xdplab-nutcracker-")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nutcracker.yml")
	if err := os.WriteFile(conf, []byte(nutcrackerConfig(listen, servers, o)), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{
		"-c", conf,
		"-s", strconv.Itoa(o.StatsPort),
		"-a", listen.Addr().String(),
		"-p", filepath.Join(dir, "nutcracker.pid"),
	}
	// Catch config mistakes with nutcracker's own message, not a timeout.
	if out, err := h.CommandContext(ctx, bin, append([]string{"-t"}, args...)...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("nutcracker rejected its config: %v\n%s", err, strings.TrimSpace(string(out)))
	}
	p, err := start(ctx, h, "nutcracker", bin, append(args, o.Args...), dir)
	if err != nil {
		return nil, err
	}
	p.TCP = []netip.AddrPort{listen}
	// nutcracker does not implement "version"; a connection is enough.
	if err := p.waitReady(ctx, func(net.Conn) error { return nil }); err != nil {
		return nil, err
	}
	return p, nil
}

// nutcrackerServer turns "ip:port" (IPv6 in brackets) into nutcracker's
// "ip:port:1" and passes anything else through.
func nutcrackerServer(b string) (string, error) {
	if ap, err := netip.ParseAddrPort(b); err == nil {
		// nutcracker splits host, port and weight at the last colons, so
		// IPv6 addresses go unbracketed.
		return ap.Addr().String() + ":" + strconv.Itoa(int(ap.Port())) + ":1", nil
	}
	if strings.Count(strings.Fields(b + " ")[0], ":") < 2 {
		return "", fmt.Errorf("backend %q: want ip:port or ip:port:weight [name]", b)
	}
	return b, nil
}

func nutcrackerConfig(listen netip.AddrPort, servers []string, o NutcrackerOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "xdplab:\n")
	fmt.Fprintf(&b, "  listen: %s:%d\n", listen.Addr(), listen.Port())
	fmt.Fprintf(&b, "  hash: fnv1a_32\n")
	fmt.Fprintf(&b, "  distribution: ketama\n")
	fmt.Fprintf(&b, "  timeout: %d\n", o.Timeout.Milliseconds())
	fmt.Fprintf(&b, "  redis: false\n")
	fmt.Fprintf(&b, "  auto_eject_hosts: %t\n", o.AutoEjectHosts)
	fmt.Fprintf(&b, "  server_failure_limit: %d\n", o.ServerFailureLimit)
	fmt.Fprintf(&b, "  server_retry_timeout: %d\n", o.ServerRetryTimeout.Milliseconds())
	fmt.Fprintf(&b, "  servers:\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "   - %s\n", s)
	}
	return b.String()
}
