package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/internal/testutils"
	"github.com/xdplab/xdplab/lab/verifier"
)

// roomSamples is how many datagrams a room measurement sends: a veth's
// page_pool hands out fragments of one page in turn, and the page's last
// gets the page's remainder, so one in a few frames has more tailroom.
const roomSamples = 16

// measureRoom sends roomSamples datagrams of payload from client to the
// probe and returns the smallest and largest Room seen (each end on its
// own).
func measureRoom(t *testing.T, p *RoomProbe, client *Host, dst netip.AddrPort, payload []byte) (lo, hi Room) {
	t.Helper()
	send, done, err := SendUDP(client, dst, payload)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	for i := 0; i < roomSamples; i++ {
		r, err := p.Measure(send)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			lo, hi = r, r
		}
		lo.Head, lo.Tail = min(lo.Head, r.Head), min(lo.Tail, r.Tail)
		hi.Head, hi.Tail = max(hi.Head, r.Head), max(hi.Tail, r.Tail)
	}
	return lo, hi
}

// TestXDPRoomOnVeth measures how far an XDP program on a veth can grow a
// GET-sized UDP request (a memcached frame header and "get " with a 16-byte
// key), over IPv4 and IPv6, with a plain and a frags-aware program, and
// records it for the matrix report. It asserts only what every kernel
// must give: XDP_PACKET_HEADROOM (256) less the xdp_frame the head keeps
// for XDP_TX (at most 40 bytes on the pinned kernels).
func TestXDPRoomOnVeth(t *testing.T) {
	const port = 7014
	topo := ForTest(t, PairSpec(Options{PeerXDP: true}))
	client, kv := topo.Host("client"), topo.Host("kv")
	payload := append([]byte{0, 1, 0, 0, 0, 1, 0, 0}, "get room-probe-key-16\r\n"[:4+16+2]...)
	var limits []verifier.Limit
	for _, frags := range []bool{false, true} {
		p, err := ProbeRoom(kv, kv.Dev(), port, frags)
		if frags && errors.Is(err, ebpf.ErrNotSupported) {
			t.Logf("frags-aware programs: %v", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, v6 := range []bool{false, true} {
			dst := netip.AddrPortFrom(kv.IPv4(), port)
			name := "IPv4"
			if v6 {
				dst, name = netip.AddrPortFrom(kv.IPv6(), port), "IPv6"
			}
			if frags {
				name += ", xdp.frags"
			}
			lo, hi := measureRoom(t, p, client, dst, payload)
			flen := UDPFrameLen(len(payload), v6)
			t.Logf("veth, GET of %d bytes (%s frame of %d): head %d..%d, tail %d..%d, growth at least %d",
				len(payload), name, flen, lo.Head, hi.Head, lo.Tail, hi.Tail, lo.Head+lo.Tail)
			if lo.Head < 256-40 {
				t.Errorf("%s: head room %d, below XDP_PACKET_HEADROOM less an xdp_frame", name, lo.Head)
			}
			tail := fmt.Sprint(lo.Tail)
			if hi.Tail != lo.Tail {
				tail += fmt.Sprintf(", up to %d in %d frames", hi.Tail, roomSamples)
			}
			limits = append(limits,
				verifier.Limit{Name: fmt.Sprintf("veth head room, GET %s", name), Value: int64(lo.Head), Unit: "bytes"},
				verifier.Limit{Name: fmt.Sprintf("veth tail room, GET %s", name), Value: int64(lo.Tail), Unit: "bytes",
					Note: fmt.Sprintf("frame %d bytes; tail %s", flen, strings.TrimSpace(tail))},
			)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	testutils.RecordRoom(t, "netlab", limits)
}
