package netlab

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func describe(t *Topology) string {
	var b strings.Builder
	for _, h := range t.Hosts {
		fmt.Fprintf(&b, "%s %s %s:", h.Name, h.Role, h.NetNS)
		for _, i := range h.Ifaces {
			fmt.Fprintf(&b, " %s#%d %s %s %s peer=%s/%s", i.Name, i.Index, i.MAC, i.IPv4, i.IPv6, i.Peer.Host.Name, i.Peer.Name)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestOpen(t *testing.T) {
	spec := StarSpec(2, Options{PeerXDP: true})
	spec.Prefix = NewPrefix()
	built := ForTest(t, spec)

	opened, err := Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := describe(opened), describe(built); got != want {
		t.Errorf("Open read back\n%s\nNew built\n%s", got, want)
	}
	// The opened topology works: traffic from the client reaches a
	// backend through the proxy.
	kv2 := opened.Host("kv2")
	echo := udpEcho(t, kv2, kv2.IPv4(), 7)
	if err := roundTrip(opened.Host("client"), echo, 5*time.Second); err != nil {
		t.Errorf("client -> kv2 through an opened topology: %v", err)
	}

	// Detach leaves everything in place and the topology unusable.
	opened.Detach()
	if err := opened.Host("client").Do(func() error { return nil }); err == nil {
		t.Error("Do after Detach succeeded")
	}
	if err := opened.Close(); err != nil {
		t.Errorf("Close after Detach: %v", err)
	}
	if n := len(leftovers(t, spec.Prefix)); n != 4 {
		t.Errorf("after Detach %d namespaces, want 4: %v", n, leftovers(t, spec.Prefix))
	}
	again, err := Open(spec)
	if err != nil {
		t.Fatalf("Open after Detach: %v", err)
	}
	again.Detach()

	// A spec the kernel does not match is refused, naming what is missing.
	bigger := StarSpec(3, Options{Prefix: spec.Prefix})
	if _, err := Open(bigger); err == nil || !strings.Contains(err.Error(), "kv3") {
		t.Errorf("Open of a 3-backend spec over 2 backends: %v, want an error naming kv3", err)
	}
	if _, err := Open(StarSpec(2, Options{Prefix: NewPrefix()})); err == nil {
		t.Error("Open of a prefix with nothing built: no error")
	}
	// A link gone (deleting one end takes the pair) is noticed.
	dev := built.Host("kv1").Dev()
	if err := built.Host("kv1").Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(spec); err == nil || !strings.Contains(err.Error(), "proxy-kv1") {
		t.Errorf("Open with the proxy-kv1 link deleted: %v, want an error naming it", err)
	}
}
