package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
alpha:
  listen: 198.18.1.1:22121
  hash: fnv1a_32
  distribution: ketama
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  timeout: 400
  servers:
   - 198.18.2.2:11211:1
   - 198.18.3.2:11212:2 cache-b
   - fd00:0:0:4::2:11211:1
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen4 != netip.MustParseAddr("198.18.1.1") || cfg.Listen6.IsValid() || cfg.Port != 22121 || cfg.Slow.Timeout != 400*time.Millisecond {
		t.Errorf("listen %s %s port %d timeout %v", cfg.Listen4, cfg.Listen6, cfg.Port, cfg.Slow.Timeout)
	}
	want := []Backend{
		{Server: Server{Host: "198.18.2.2", Port: 11211, Weight: 1}, IPv4: netip.MustParseAddr("198.18.2.2")},
		{Server: Server{Host: "198.18.3.2", Port: 11212, Weight: 2, Name: "cache-b"}, IPv4: netip.MustParseAddr("198.18.3.2")},
		{Server: Server{Host: "fd00:0:0:4::2", Port: 11211, Weight: 1}, IPv6: netip.MustParseAddr("fd00:0:0:4::2")},
	}
	if len(cfg.Backends) != len(want) {
		t.Fatalf("backends %+v", cfg.Backends)
	}
	for i := range want {
		if cfg.Backends[i] != want[i] {
			t.Errorf("backend %d: %+v, want %+v", i, cfg.Backends[i], want[i])
		}
	}

	for _, c := range []struct{ yaml, err string }{
		{"a:\n  listen: 1.2.3.4:1\n  hash: md5\n  servers: [1.1.1.1:1:1]\n", "only fnv1a_32"},
		{"a:\n  listen: 1.2.3.4:1\n  distribution: modula\n  servers: [1.1.1.1:1:1]\n", "only ketama"},
		{"a:\n  listen: 1.2.3.4:1\n  servers: [1.1.1.1:1:1]\nb:\n  listen: 1.2.3.4:2\n  servers: [1.1.1.1:1:1]\n", "exactly one"},
		{"a:\n  listen: localhost:1\n  servers: [1.1.1.1:1:1]\n", "IP address"},
		{"a:\n  listen: 1.2.3.4:1\n  servers: [cache.example:11211:1]\n", "IP address"},
		{"a:\n  listen: 1.2.3.4:1\n  servers: []\n", "no servers"},
		{"a:\n  listen: 1.2.3.4:1\n  sevrers: [1.1.1.1:1:1]\n", "sevrers"},
		{"a:\n  listen: 1.2.3.4:1\n  redis: true\n  servers: [1.1.1.1:1:1]\n", "memcached only"},
	} {
		if _, err := ParseConfig([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: error %v, want one saying %q", c.yaml, err, c.err)
		}
	}
}

func TestBackendWithAddr(t *testing.T) {
	b, err := BackendFor(Server{Host: "198.18.2.2", Port: DefaultPort, Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.WithAddr(netip.MustParseAddr("fd00:0:0:2::2"))
	if err != nil || d.IPv4 != b.IPv4 || d.IPv6 != netip.MustParseAddr("fd00:0:0:2::2") || d.Server != b.Server {
		t.Errorf("dual-family backend %+v, %v", d, err)
	}
	for _, c := range []struct {
		b   Backend
		a   string
		err string
	}{
		{b, "198.18.3.2", "two IPv4 addresses"},
		{b, "::ffff:198.18.3.2", "two IPv4 addresses"}, // mapped is IPv4
		{d, "fd00::3", "two IPv6 addresses"},
		{b, "fe80::1%eth0", "not an address"},
	} {
		if _, err := c.b.WithAddr(netip.MustParseAddr(c.a)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%+v with %s: %v, want an error saying %q", c.b, c.a, err, c.err)
		}
	}
	if _, err := BackendFor(Server{Host: "198.18.2.2", Port: 0, Weight: 1}); err == nil || !strings.Contains(err.Error(), "port 0") {
		t.Errorf("port 0: %v", err)
	}
}
