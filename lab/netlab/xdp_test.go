package netlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// reflector returns an XDP program that sends IPv4 UDP datagrams for port
// straight back with XDP_TX, swapping MACs, addresses and ports (which
// leaves both checksums valid), and passes everything else.
func reflector(t *testing.T, port uint16) *ebpf.Program {
	t.Helper()
	RemoveMemlock()
	be := be16
	swap := func(a, b int16, size asm.Size) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R4, asm.R2, a, size),
			asm.LoadMem(asm.R5, asm.R2, b, size),
			asm.StoreMem(asm.R2, a, asm.R5, size),
			asm.StoreMem(asm.R2, b, asm.R4, size),
		}
	}
	insns := append(xdpFrameStart(14+20+8),
		asm.JNE.Imm(asm.R4, be(0x0800), "pass"),
		asm.LoadMem(asm.R4, asm.R2, 14, asm.Byte),
		asm.JNE.Imm(asm.R4, 0x45, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 23, asm.Byte),
		asm.JNE.Imm(asm.R4, 17, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 36, asm.Half),
		asm.JNE.Imm(asm.R4, be(port), "pass"),
	)
	insns = append(insns, swap(0, 6, asm.Word)...)
	insns = append(insns, swap(4, 10, asm.Half)...)
	insns = append(insns, swap(26, 30, asm.Word)...)
	insns = append(insns, swap(34, 36, asm.Half)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, 3), // XDP_TX
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// TestXDPTXOnVeth checks the two veth quirks the package works around: an
// XDP_TX reply is only delivered when the peer has an XDP program, and only
// arrives intact when the sender computed a full UDP checksum.
func TestXDPTXOnVeth(t *testing.T) {
	const port = 7010
	for _, tc := range []struct {
		name   string
		opts   Options
		answer bool
	}{
		{"peer XDP, checksum offload off", Options{PeerXDP: true}, true},
		{"no peer XDP", Options{}, false},
		{"checksum offload on", Options{PeerXDP: true, KeepChecksumOffload: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo := ForTest(t, PairSpec(tc.opts))
			kv := topo.Host("kv")
			l, err := AttachXDP(kv, kv.Dev(), reflector(t, port))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			// No listener on kv: only the reflector can answer.
			err = roundTrip(topo.Host("client"), netip.AddrPortFrom(kv.IPv4(), port), 300*time.Millisecond)
			if tc.answer && err != nil {
				t.Errorf("no reflected reply: %v", err)
			}
			if !tc.answer && err == nil {
				t.Errorf("got a reply; the quirk this case documents is gone")
			}
		})
	}
}

func TestAttachXDPPassTwice(t *testing.T) {
	topo := ForTest(t, PairSpec(Options{}))
	kv := topo.Host("kv")
	c, err := AttachXDPPass(kv, kv.Dev())
	if err != nil {
		t.Fatal(err)
	}
	if c2, err := AttachXDPPass(kv, kv.Dev()); err == nil {
		c2.Close()
		t.Error("second native XDP program on one device attached")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// With PASS attached, ordinary traffic still flows.
	c, err = AttachXDPPass(kv, kv.Dev())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(topo.Host("client"), udpEcho(t, kv, kv.IPv4(), 7011), 2*time.Second); err != nil {
		t.Error(err)
	}
}

// TestTakeXDPPass: servers take the placeholder's place and put it back;
// HasXDPPass tells the placeholder from no program and from another one.
func TestTakeXDPPass(t *testing.T) {
	topo := ForTest(t, PairSpec(Options{PeerXDP: true}))
	client, kv := topo.Host("client"), topo.Host("kv")
	check := func(h *Host, fn func(string) (bool, error), want bool, what string) {
		t.Helper()
		var got bool
		if err := h.Do(func() (err error) { got, err = fn(h.Dev()); return err }); err != nil || got != want {
			t.Errorf("%s on %s: %v, %v; want %v", what, h.Name, got, err, want)
		}
	}
	check(kv, HasXDPPass, false, "has, no program")
	check(kv, TakeXDPPass, false, "take, no program")
	check(client, HasXDPPass, true, "has, placeholder")
	check(client, TakeXDPPass, true, "take, placeholder")
	check(client, HasXDPPass, false, "has, taken")
	check(client, TakeXDPPass, false, "take, taken")
	l, err := AttachXDP(client, client.Dev(), reflector(t, 7012))
	if err != nil {
		t.Fatal(err)
	}
	check(client, HasXDPPass, false, "has, another program")
	check(client, TakeXDPPass, false, "take, another program")
	l.Close()
	if err := client.Do(func() error { return PutXDPPass(client.Dev()) }); err != nil {
		t.Fatal(err)
	}
	check(client, HasXDPPass, true, "has, put back")
}

// redirector returns an XDP program that sends IPv4 UDP datagrams for port
// to ifindex with XDP_REDIRECT, rewriting the Ethernet header to go from
// src to dst, and passes everything else: a one-route fast path.
func redirector(t *testing.T, port uint16, ifindex int, src, dst net.HardwareAddr) *ebpf.Program {
	t.Helper()
	RemoveMemlock()
	be := be16
	mac := func(off int16, m net.HardwareAddr) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.R2, off, int64(int32(binary.LittleEndian.Uint32(m[:4]))), asm.Word),
			asm.StoreImm(asm.R2, off+4, int64(binary.LittleEndian.Uint16(m[4:])), asm.Half),
		}
	}
	insns := append(xdpFrameStart(14+20+8),
		asm.JNE.Imm(asm.R4, be(0x0800), "pass"),
		asm.LoadMem(asm.R4, asm.R2, 14, asm.Byte),
		asm.JNE.Imm(asm.R4, 0x45, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 23, asm.Byte),
		asm.JNE.Imm(asm.R4, 17, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 36, asm.Half),
		asm.JNE.Imm(asm.R4, be(port), "pass"),
	)
	insns = append(insns, mac(0, dst)...)
	insns = append(insns, mac(6, src)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R1, int32(ifindex)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// TestXDPRedirectInStar checks the star's one-veth-per-neighbour design: an
// XDP program on the proxy's client-facing interface redirects requests
// straight into the interface towards a backend, which delivers them only
// when the backend's end has an XDP program.
func TestXDPRedirectInStar(t *testing.T) {
	const port = 7013
	for _, peerXDP := range []bool{true, false} {
		t.Run(fmt.Sprintf("PeerXDP=%v", peerXDP), func(t *testing.T) {
			topo := ForTest(t, StarSpec(2, Options{PeerXDP: peerXDP}))
			client, proxy, kv2 := topo.Host("client"), topo.Host("proxy"), topo.Host("kv2")
			out := proxy.IfaceTo("kv2")
			l, err := AttachXDP(proxy, proxy.IfaceTo("client").Name, redirector(t, port, out.Index, out.MAC, out.Peer.MAC))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			err = roundTrip(client, udpEcho(t, kv2, kv2.IPv4(), port), 300*time.Millisecond)
			if peerXDP && err != nil {
				t.Errorf("redirected request unanswered: %v", err)
			}
			if !peerXDP && err == nil {
				t.Errorf("answered without an XDP program on the backend; the quirk is gone")
			}
		})
	}
}
