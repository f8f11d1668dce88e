// Package reflector loads bpf/reflect.bpf.c: the benchmarks' ceiling, an
// XDP program that answers every memcached UDP GET of the benchmark's shape
// with the bytes a store GET hit of the benchmark's value gives, and every
// SET with STORED, keeping no state. A store's GETs/s over the reflector's,
// measured with one client in one run, says how near the store runs to what
// the client and the path allow.
//
// It answers only datagrams to the lab's addresses (198.18.0.0/15,
// fd00::/8) on its port; everything else passes.
package reflector

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/netlab"
)

// Config is what the reflector answers.
type Config struct {
	// Port it answers on (default 11211).
	Port uint16
	// KeySize is the length of the keys of the GETs it answers (1..250);
	// other GETs pass.
	KeySize int
	// Value is what every GET hit returns, with flags 0.
	Value []byte
}

// keyOff is where the key starts in the reply's payload: the frame header,
// then "VALUE ".
const keyOff = memcache.HeaderLen + len("VALUE ")

// Reply is the payload after the frame header that the reflector (and a
// store holding key with value and flags 0) answers "get key" with.
func Reply(key, value []byte) []byte {
	b := append([]byte("VALUE "), key...)
	b = append(b, " 0 "+strconv.Itoa(len(value))+"\r\n"...)
	b = append(b, value...)
	return append(b, "\r\nEND\r\n"...)
}

// Reflector is the loaded program.
type Reflector struct {
	objs reflectObjects
}

// Stats are what the program counted, over all CPUs.
type Stats struct {
	Gets, Sets, Passed uint64
}

// Load loads the program for cfg; attach Program() to a device.
func Load(cfg Config) (*Reflector, error) {
	if cfg.Port == 0 {
		cfg.Port = 11211
	}
	if cfg.KeySize < 1 || cfg.KeySize > memcache.MaxKeyLen {
		return nil, fmt.Errorf("reflector: key size %d: want 1..%d", cfg.KeySize, memcache.MaxKeyLen)
	}
	key := make([]byte, cfg.KeySize)
	payload := append(make([]byte, memcache.HeaderLen), Reply(key, cfg.Value)...)
	// The reply leaves with a 1500-byte MTU in one datagram, over IPv6 too.
	if max := 1500 - 40 - 8; len(payload) > max {
		return nil, fmt.Errorf("reflector: a %d-byte value makes a %d-byte reply, over one datagram's %d", len(cfg.Value), len(payload), max)
	}
	spec, err := loadReflect()
	if err != nil {
		return nil, err
	}
	var specs reflectSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, err
	}
	for _, set := range []struct {
		v   *ebpf.VariableSpec
		val any
	}{
		{specs.Port, cfg.Port}, {specs.KeyLen, uint32(cfg.KeySize)},
		{specs.ReplyLen, uint32(len(payload))}, {specs.ReplySum, sum16(payload)},
	} {
		if err := set.v.Set(set.val); err != nil {
			return nil, fmt.Errorf("reflector: set %s: %w", set.v.Name, err)
		}
	}
	r := &Reflector{}
	if err := spec.LoadAndAssign(&r.objs, bpfload.Options()); err != nil {
		return nil, bpfload.Explain("reflector", err)
	}
	n, err := ebpf.PossibleCPU()
	if err != nil {
		r.Close()
		return nil, err
	}
	vals := make([]reflectRfScratch, n)
	for i := range vals {
		copy(vals[i].Buf[:], payload)
	}
	if err := r.objs.Scratch.Put(uint32(0), vals); err != nil {
		r.Close()
		return nil, fmt.Errorf("reflector: fill the reply: %w", err)
	}
	return r, nil
}

// sum16 is the 16-bit word sum of b (zero-padded to even), words loaded in
// the host's (little-endian) order, as the program's frame_sum16 does, and
// folded to 32 bits so the program can add it without overflow.
func sum16(b []byte) uint32 {
	var s uint64
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i])
		if i+1 < len(b) {
			w |= uint64(b[i+1]) << 8
		}
		s += w
	}
	for s>>32 != 0 {
		s = s&0xffffffff + s>>32
	}
	return uint32(s)
}

// Program is the XDP program to attach (native mode on a veth, with an XDP
// program on the peer, as every XDP_TX server in the lab).
func (r *Reflector) Program() *ebpf.Program { return r.objs.ReflectXdp }

// Stats sums the per-CPU counters.
func (r *Reflector) Stats() (Stats, error) {
	var vals []reflectRfScratch
	if err := r.objs.Scratch.Lookup(uint32(0), &vals); err != nil {
		return Stats{}, err
	}
	var st Stats
	for _, v := range vals {
		st.Gets += v.Gets
		st.Sets += v.Sets
		st.Passed += v.Passed
	}
	return st, nil
}

// Close unloads the program.
func (r *Reflector) Close() error { return r.objs.Close() }

// ForTest loads the reflector for cfg and attaches it to h's device
// (native XDP), for the rest of the test or benchmark.
func ForTest(tb testing.TB, h *netlab.Host, cfg Config) *Reflector {
	tb.Helper()
	netlab.RemoveMemlock()
	r, err := Load(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	l, err := netlab.AttachXDP(h, h.Dev(), r.Program())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return r
}
