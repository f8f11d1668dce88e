package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"
)

// pool is the part of a nutcracker pool the proxy understands.
type pool struct {
	Listen       string   `yaml:"listen"`
	Hash         string   `yaml:"hash"`
	Distribution string   `yaml:"distribution"`
	Timeout      *int     `yaml:"timeout"` // ms
	Servers      []string `yaml:"servers"`
	// Accepted and ignored: the proxy always ejects dead backends (health
	// decides, not a failure count) and speaks memcached.
	AutoEjectHosts     *bool  `yaml:"auto_eject_hosts"`
	ServerRetryTimeout *int   `yaml:"server_retry_timeout"`
	ServerFailureLimit *int   `yaml:"server_failure_limit"`
	Redis              *bool  `yaml:"redis"`
	Backlog            *int   `yaml:"backlog"`
	Preconnect         *bool  `yaml:"preconnect"`
	ServerConnections  *int   `yaml:"server_connections"`
	HashTag            string `yaml:"hash_tag"`
}

// ParseConfig reads a nutcracker YAML config with one pool and returns
// what the proxy needs of it: the listen address (an IP literal and port),
// the backends and the timeout. nutcracker's keys the proxy cannot honour
// are errors, not silently different behaviour: a hash other than
// fnv1a_32, a distribution other than ketama, hash_tag, redis, unix
// sockets or host names.
func ParseConfig(data []byte) (ServeConfig, error) {
	var pools map[string]pool
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&pools); err != nil {
		return ServeConfig{}, fmt.Errorf("config: %w", err)
	}
	if len(pools) != 1 {
		names := make([]string, 0, len(pools))
		for n := range pools {
			names = append(names, n)
		}
		sort.Strings(names)
		return ServeConfig{}, fmt.Errorf("config: %d pools %v; the proxy serves exactly one", len(pools), names)
	}
	var name string
	var p pool
	for name, p = range pools {
	}
	bad := func(format string, a ...any) (ServeConfig, error) {
		return ServeConfig{}, fmt.Errorf("config: pool %s: "+format, append([]any{name}, a...)...)
	}
	if p.Hash != "" && p.Hash != "fnv1a_32" {
		return bad("hash %s: only fnv1a_32 is supported", p.Hash)
	}
	if p.Distribution != "" && p.Distribution != "ketama" {
		return bad("distribution %s: only ketama is supported", p.Distribution)
	}
	if p.HashTag != "" {
		return bad("hash_tag is not supported")
	}
	if p.Redis != nil && *p.Redis {
		return bad("redis: the proxy speaks memcached only")
	}
	var cfg ServeConfig
	ap, err := netip.ParseAddrPort(p.Listen)
	if err != nil {
		return bad("listen %q: want ADDR:PORT with an IP address (IPv6 in brackets)", p.Listen)
	}
	cfg.Port = ap.Port()
	if a := ap.Addr().Unmap(); a.Is4() {
		cfg.Listen4 = a
	} else {
		cfg.Listen6 = a
	}
	if p.Timeout != nil {
		if *p.Timeout <= 0 {
			return bad("timeout %d: want milliseconds above 0", *p.Timeout)
		}
		cfg.Slow.Timeout = time.Duration(*p.Timeout) * time.Millisecond
	}
	if len(p.Servers) == 0 {
		return bad("no servers")
	}
	for _, s := range p.Servers {
		srv, err := ParseServer(s)
		if err != nil {
			return bad("%v", err)
		}
		b, err := BackendFor(srv)
		if err != nil {
			return bad("%v", err)
		}
		cfg.Backends = append(cfg.Backends, b)
	}
	return cfg, nil
}

// BackendFor is the backend at srv's address: its host must be an IP
// literal (ketama still hashes it as written).
func BackendFor(srv Server) (Backend, error) {
	ap, err := srv.AddrPort()
	if err != nil {
		return Backend{}, errors.New("server " + srv.String() + ": the host must be an IP address")
	}
	if ap.Port() == 0 {
		return Backend{}, errors.New("server " + srv.String() + ": port 0 is no port to send to")
	}
	return Backend{Server: srv}.WithAddr(ap.Addr())
}

// WithAddr is b with a as its address of a's family, which b must not have
// yet. A backend with an address of each family keeps requests of either in
// XDP: the program forwards each to the address of its own family and hands
// the slow path those of a family the backend lacks. The ring placement
// stays Server's.
func (b Backend) WithAddr(a netip.Addr) (Backend, error) {
	a = a.Unmap()
	old, fam := &b.IPv4, "IPv4"
	if a.Is6() {
		old, fam = &b.IPv6, "IPv6"
	}
	switch {
	case !a.IsValid() || a.Zone() != "":
		return b, fmt.Errorf("%q is not an address a backend can have", a)
	case old.IsValid():
		return b, fmt.Errorf("two %s addresses (%s and %s): give at most one of each family", fam, *old, a)
	}
	*old = a
	return b, nil
}
