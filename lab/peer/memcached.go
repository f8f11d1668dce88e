package peer

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/xdplab/xdplab/lab/netlab"
)

// MemcachedOptions configure StartMemcached. Zero values pick defaults.
type MemcachedOptions struct {
	// Addrs to listen on; default: every address of the host.
	Addrs []netip.Addr
	// Port for TCP; default 11211.
	Port int
	// UDPPort; default Port. Negative disables UDP.
	UDPPort int
	// Threads (-t); default 2, the machine's core count here.
	Threads int
	// MemoryMB (-m); default 64.
	MemoryMB int
	// Binary; default /usr/bin/memcached, else memcached from $PATH.
	Binary string
	// Args are appended to the command line (e.g. "-vv", "-I", "2m").
	Args []string
}

// StartMemcached runs memcached in h's namespace and returns once it
// answers "version" over TCP on every address. Cancelling ctx kills it, as
// with exec.CommandContext; Stop kills it and waits.
func StartMemcached(ctx context.Context, h *netlab.Host, o MemcachedOptions) (*Process, error) {
	bin := o.Binary
	if bin == "" {
		bin = "/usr/bin/memcached"
	}
	bin, err := findBinary(bin, "memcached")
	if err != nil {
		return nil, err
	}
	if len(o.Addrs) == 0 {
		o.Addrs = hostAddrs(h)
	}
	if len(o.Addrs) == 0 {
		return nil, fmt.Errorf("memcached: host %s has no addresses", h.Name)
	}
	if o.Port == 0 {
		o.Port = 11211
	}
	if o.UDPPort == 0 {
		o.UDPPort = o.Port
	}
	if o.UDPPort < 0 {
		o.UDPPort = 0 // memcached's "off"
	}
	if o.Threads == 0 {
		o.Threads = 2
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 64
	}
	var listen []string
	for _, a := range o.Addrs {
		if a.Is6() {
			// memcached wants brackets to tell an IPv6 address from host:port.
			listen = append(listen, "["+a.String()+"]")
		} else {
			listen = append(listen, a.String())
		}
	}
	args := []string{
		"-l", strings.Join(listen, ","),
		"-p", strconv.Itoa(o.Port),
		"-U", strconv.Itoa(o.UDPPort),
		"-t", strconv.Itoa(o.Threads),
		"-m", strconv.Itoa(o.MemoryMB),
	}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses root otherwise
	}
	args = append(args, o.Args...)
	p, err := start(ctx, h, "memcached", bin, args, "")
	if err != nil {
		return nil, err
	}
	for _, a := range o.Addrs {
		p.TCP = append(p.TCP, netip.AddrPortFrom(a, uint16(o.Port)))
		if o.UDPPort > 0 {
			p.UDP = append(p.UDP, netip.AddrPortFrom(a, uint16(o.UDPPort)))
		}
	}
	if err := p.waitReady(ctx, probeVersion); err != nil {
		return nil, err
	}
	return p, nil
}
