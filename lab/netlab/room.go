package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Room is how far an XDP program could grow one frame it received: the
// bytes bpf_xdp_adjust_head would add in front and bpf_xdp_adjust_tail at
// the end, each found by trying (to the byte), the other end untouched. A
// reply built in place can outgrow its request by Head+Tail at most: the
// two helpers take from different ends of the buffer.
//
// What a veth gives depends on the kernel: before 6.6 its XDP path copies a
// frame from a socket into a whole page (VETH_XDP_HEADROOM in front, the
// rest of the page behind); from then on into a page_pool fragment sized to
// the frame (XDP_PACKET_HEADROOM in front, SKB_DATA_ALIGN's slack behind,
// and the page's remainder when the fragment is a page's last).
// bpf_xdp_adjust_head keeps sizeof(struct xdp_frame) of the headroom for
// XDP_TX.
type Room struct {
	Head, Tail int
}

// RoomProbe is an XDP program on a device that, for each UDP datagram to
// its port (IPv4 or IPv6), finds the frame's Room and drops it.
type RoomProbe struct {
	prog *ebpf.Program
	m    *ebpf.Map
	l    link.Link
	seq  uint32
}

// ProbeRoom attaches a room probe to dev on host in native mode, for UDP
// datagrams to port. frags loads it as a frags-aware program (xdp.frags,
// BPF_F_XDP_HAS_FRAGS, Linux 5.18): an error wrapping ebpf.ErrNotSupported
// where the kernel has no such programs. Close detaches it.
func ProbeRoom(h *Host, dev string, port uint16, frags bool) (*RoomProbe, error) {
	RemoveMemlock()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("netlab: room probe map: %w", err)
	}
	spec := &ebpf.ProgramSpec{Name: "xdp_room", Type: ebpf.XDP, License: "GPL", Instructions: roomInsns(port, m.FD())}
	if frags {
		spec.Flags = unix.BPF_F_XDP_HAS_FRAGS
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		m.Close()
		if frags && errors.Is(err, unix.EINVAL) {
			err = fmt.Errorf("%w (%w)", ebpf.ErrNotSupported, err)
		}
		return nil, fmt.Errorf("netlab: load room probe: %w", err)
	}
	l, err := AttachXDP(h, dev, prog)
	if err != nil {
		prog.Close()
		m.Close()
		return nil, err
	}
	return &RoomProbe{prog: prog, m: m, l: l}, nil
}

// Measure calls send, which must send one datagram to the probe's port,
// and returns the Room of the frame the probe saw.
func (p *RoomProbe) Measure(send func() error) (Room, error) {
	if err := send(); err != nil {
		return Room{}, err
	}
	var v [12]byte
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if err := p.m.Lookup(uint32(0), &v); err != nil {
			return Room{}, err
		}
		if seq := binary.NativeEndian.Uint32(v[0:]); seq != p.seq {
			p.seq = seq
			return Room{Head: int(binary.NativeEndian.Uint32(v[4:])), Tail: int(binary.NativeEndian.Uint32(v[8:]))}, nil
		}
	}
	return Room{}, errors.New("netlab: the room probe saw no datagram in 30 s")
}

// Close detaches and unloads the probe.
func (p *RoomProbe) Close() error {
	err := p.l.Close()
	p.prog.Close()
	p.m.Close()
	return err
}

// roomInsns: for a UDP datagram to port, grow the head by 1024, 512, ...,
// 1 bytes, keeping each step the kernel allows, likewise the tail from
// 2048 (a page's worth in all), then record both sums in the map's one
// entry (seq, head, tail: seq counts the frames) and drop the frame.
// Anything else passes.
func roomInsns(port uint16, mapFD int) asm.Instructions {
	be := be16
	insns := append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}, xdpFrameStart(14+20+8)...)
	insns = append(insns,
		asm.JEq.Imm(asm.R4, be(unix.ETH_P_IP), "v4"),
		asm.JNE.Imm(asm.R4, be(unix.ETH_P_IPV6), "pass"),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14+40+8),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 14+6, asm.Byte),
		asm.JNE.Imm(asm.R4, unix.IPPROTO_UDP, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 14+40+2, asm.Half),
		asm.JNE.Imm(asm.R4, be(port), "pass"),
		asm.Ja.Label("probe"),
		asm.LoadMem(asm.R4, asm.R2, 14, asm.Byte).WithSymbol("v4"),
		asm.JNE.Imm(asm.R4, 0x45, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 14+9, asm.Byte),
		asm.JNE.Imm(asm.R4, unix.IPPROTO_UDP, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 14+20+2, asm.Half),
		asm.JNE.Imm(asm.R4, be(port), "pass"),
		asm.Mov.Imm(asm.R7, 0).WithSymbol("probe"), // head
		asm.Mov.Imm(asm.R8, 0),                     // tail
	)
	grow := func(reg asm.Register, fn asm.BuiltinFunc, sign int32, from int32, label string) {
		for step := from; step > 0; step /= 2 {
			skip := fmt.Sprintf("%s%d", label, step)
			insns = append(insns,
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.Mov.Imm(asm.R2, sign*step),
				fn.Call(),
				asm.JNE.Imm(asm.R0, 0, skip),
				asm.Add.Imm(reg, step),
				asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
			)
		}
	}
	grow(asm.R7, asm.FnXdpAdjustHead, -1, 1024, "head")
	grow(asm.R8, asm.FnXdpAdjustTail, 1, 2048, "tail")
	insns = append(insns,
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.StoreMem(asm.R0, 4, asm.R7, asm.Word),
		asm.StoreMem(asm.R0, 8, asm.R8, asm.Word),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.Word),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	)
	return insns
}

// be16 is v in network order, as a 16-bit load reads it on a little-endian
// machine, for comparing with an immediate.
func be16(v uint16) int32 { return int32(v>>8 | v<<8&0xff00) }

// xdpFrameStart loads an XDP frame's data into R2 and data_end into R3
// (from the context in R1), jumps to "pass" when the frame is shorter than
// n bytes, and loads its EtherType into R4 (network order).
func xdpFrameStart(n int32) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, n),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R4, asm.R2, 12, asm.Half),
	}
}

// UDPFrameLen is the length of the Ethernet frame carrying a UDP datagram
// of n payload bytes, over IPv6 or IPv4 without options.
func UDPFrameLen(n int, v6 bool) int {
	if v6 {
		return 14 + 40 + 8 + n
	}
	return 14 + 20 + 8 + n
}

// SendUDP returns a function that sends payload from a socket of host's
// to dst, one datagram a call, for RoomProbe.Measure; close stops it.
func SendUDP(h *Host, dst netip.AddrPort, payload []byte) (send func() error, close func(), err error) {
	var c *net.UDPConn
	if err := h.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return nil, nil, err
	}
	return func() error { _, err := c.Write(payload); return err }, func() { c.Close() }, nil
}
