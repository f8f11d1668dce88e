package frame

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
)

func datagrams() []Datagram {
	v4 := Datagram{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddrPort("198.18.0.1:40000"), Dst: netip.MustParseAddrPort("198.18.0.2:11211"),
		ID: 0x1234, Total: 1, Payload: []byte("get foo\r\n"),
	}
	v6 := v4
	v6.Src, v6.Dst = netip.MustParseAddrPort("[fd00::1]:40000"), netip.MustParseAddrPort("[fd00::2]:11211")
	odd := v4
	odd.TTL, odd.Seq, odd.Total, odd.Reserved, odd.Payload = 1, 1, 2, 0xbeef, []byte("x") // odd length
	noSum := v4
	noSum.NoUDPChecksum = true
	return []Datagram{v4, v6, odd, noSum}
}

// TestRoundTrip: Parse gives back what Frame was given, defaults filled
// in (TTL 64, total 1).
func TestRoundTrip(t *testing.T) {
	for _, d := range datagrams() {
		got, err := Parse(d.Frame())
		if err != nil {
			t.Fatalf("%+v: %v", d, err)
		}
		want := d
		if want.TTL == 0 {
			want.TTL = 64
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("parsed\n  %+v\nwant\n  %+v", got, want)
		}
	}
	d := datagrams()[0]
	d.SrcMAC, d.DstMAC, d.Total = nil, nil, 0
	got, err := Parse(d.Frame())
	if err != nil || got.Total != 1 || !bytes.Equal(got.SrcMAC, make([]byte, 6)) {
		t.Errorf("defaults: %+v %v", got, err)
	}
}

// TestParseRefuses: every length, checksum and header fault is an error,
// as is a frame with bytes after its datagram or an IPv6 datagram without
// a UDP checksum.
func TestParseRefuses(t *testing.T) {
	for _, d := range datagrams()[:2] {
		good := d.Frame()
		bad := map[string][]byte{
			"cut short":       good[:len(good)-1],
			"padded":          append(bytes.Clone(good), 0),
			"Ethernet only":   good[:EthLen],
			"payload flipped": func() []byte { b := bytes.Clone(good); b[len(b)-1] ^= 1; return b }(),
		}
		for _, m := range Malformed(d.IPv6()) {
			b := bytes.Clone(good)
			m.Apply(b)
			if bytes.Equal(b[6:], good[6:]) {
				continue // a group MAC address: the frame is well-formed, the host's rule refuses it
			}
			bad[m.Name] = b
		}
		if d.IPv6() {
			nd := d
			nd.NoUDPChecksum = true
			bad["IPv6 without a UDP checksum"] = nd.Frame()
		}
		for name, b := range bad {
			if _, err := Parse(b); err == nil {
				t.Errorf("v6 %v: %s: parsed", d.IPv6(), name)
			}
		}
	}
}
