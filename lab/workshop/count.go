package workshop

import (
	"fmt"
	"net/netip"
	"time"
)

// Lesson 1's counters: slots of the per-CPU array "counters".
const (
	cPackets   = 0
	cMemcached = 1
)

// Lesson 1's checks, by name (the tests assert the starter's first failure).
const (
	CheckCountPass      = "every frame passes (XDP_PASS)"
	CheckCountEvery     = "every frame is counted in counters[C_PACKETS]"
	CheckCountMemcached = "UDP datagrams to port 11211, and only those, are counted in counters[C_MEMCACHED]"
	CheckCountVeth      = "on a veth pair: datagrams still reach a server socket, and are counted"
)

func init() {
	register(&Lesson{N: 1, Slug: "count", Title: "count and pass packets", Program: "xdp_prog", Checks: []Check{
		{Name: CheckCountPass, Run: countPass,
			Hint: "every path through xdp_prog must end in return XDP_PASS; a bounds check that fails returns XDP_PASS too"},
		{Name: CheckCountEvery, Run: countEvery,
			Hint: "in count(): __u64 *c = bpf_map_lookup_elem(&counters, &which); if (c) (*c)++;"},
		{Name: CheckCountMemcached, Run: countMemcached,
			Hint: "struct ethhdr *eth = data; if ((void *)(eth + 1) > data_end) return XDP_PASS; then eth->h_proto == bpf_htons(ETH_P_IP), ip->protocol == IPPROTO_UDP, udp->dest == bpf_htons(MEMCACHED_PORT)"},
		{Name: CheckCountVeth, Run: countVeth},
	}})
}

// otherFrames are frames that are not memcached requests, each named.
func otherFrames() map[string][]byte {
	return map[string][]byte{
		"an ARP request":                    ARPFrame(),
		"a TCP segment to port 11211":       TCPFrame(),
		"a UDP datagram to port 53":         udpTo(53),
		"a frame cut after 20 bytes":        Request(1, "get foo\r\n").Frame()[:20],
		"a frame cut inside the UDP header": Request(1, "get foo\r\n").Frame()[:38],
	}
}

// udpTo is a datagram from Client to Server's address, port port.
func udpTo(port uint16) []byte {
	d := Request(1, "hello")
	d.Dst = netip.AddrPortFrom(Server.Addr(), port)
	return d.Frame()
}

func countPass(e *Env) error {
	frames := otherFrames()
	frames["a memcached get"] = Request(1, "get foo\r\n").Frame()
	return e.allPass(frames, "a counting program must let everything through")
}

// allPass runs each named frame and wants XDP_PASS for it; why says why.
func (e *Env) allPass(frames map[string][]byte, why string) error {
	for what, f := range frames {
		act, _, err := e.Run(f)
		if err != nil {
			return err
		}
		if act != XDPPass {
			return fmt.Errorf("%s came back %s: %s", what, ActionName(act), why)
		}
	}
	return nil
}

func countEvery(e *Env) error {
	if err := e.ResetCounters("counters"); err != nil {
		return err
	}
	n := 0
	for range 2 {
		for _, f := range otherFrames() {
			if _, _, err := e.Run(f); err != nil {
				return err
			}
			n++
		}
	}
	got, err := e.Counter("counters", cPackets)
	if err != nil {
		return err
	}
	if got != uint64(n) {
		return fmt.Errorf("counters[C_PACKETS] is %d after %d frames", got, n)
	}
	return nil
}

func countMemcached(e *Env) error {
	if err := e.ResetCounters("counters"); err != nil {
		return err
	}
	const n = 10
	for i := range n {
		if _, _, err := e.Run(Request(uint16(i), "get foo\r\n").Frame()); err != nil {
			return err
		}
	}
	got, err := e.Counter("counters", cMemcached)
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("counters[C_MEMCACHED] is %d after %d UDP datagrams to port 11211", got, n)
	}
	for what, f := range otherFrames() {
		if _, _, err := e.Run(f); err != nil {
			return err
		}
		if got, err := e.Counter("counters", cMemcached); err != nil {
			return err
		} else if got != n {
			return fmt.Errorf("%s was counted as a memcached datagram (counters[C_MEMCACHED] went from %d to %d)", what, n, got)
		}
	}
	return nil
}

func countVeth(e *Env) error {
	s, err := e.counterSockets()
	if err != nil {
		return err
	}
	defer s.Close()
	const n = 10
	for i := range n {
		if err := s.Send(uint16(i), "get foo\r\n"); err != nil {
			return err
		}
	}
	if got := s.Received(n, 3*time.Second); got != n {
		return fmt.Errorf("the server socket got %d of %d datagrams sent from the client namespace: the program must pass them", got, n)
	}
	got, err := e.Counter("counters", cMemcached)
	if err != nil {
		return err
	}
	if got < n {
		return fmt.Errorf("counters[C_MEMCACHED] is %d after %d datagrams on the veth pair", got, n)
	}
	return nil
}
