// Package kv loads and runs the XDP key-value store (bpf/kv.bpf.c): it sizes
// and loads the BPF objects, attaches them to an interface, and runs the Go
// slow path that serves what XDP passes up, plus memcached over TCP.
//
// Over UDP the store answers as memcached 1.6 does, with one exception that
// keeps it from being used in reflection loops: it never answers a request
// from a source port below 1024, from 11211 or from its own port (XDP drops
// it, counted as reflect_drop), nor a datagram whose first line is another
// server's reply (ERROR, VALUE, END, STORED, a number...), to which
// memcached would say ERROR. See memcache.Unanswerable.
//
// Nor is it an amplifier, as memcached's UDP port was (Config):
//   - a UDP reply is at most one datagram (UDPReplyMax, 1392 bytes of
//     payload), and optionally at most UDPAmplification times its request;
//     a larger one is replaced by "SERVER_ERROR reply too large for UDP,
//     use TCP" (TCP has no such cap);
//   - XDP sends each source address at most UDPRate reply bytes per second
//     (64 MiB/s, bursts of 4 MiB), dropping the rest (rate_drop);
//   - NoUDP turns UDP off: XDP passes it, and no socket takes it.
//
// Unlimited restores memcached's behaviour, which conformance tests use.
package kv

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"github.com/xdplab/xdplab/lab/bpfload"
	"github.com/xdplab/xdplab/lab/memcache"
	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultPort     = memcache.DefaultPort
	DefaultEntries  = 65536
	DefaultMaxValue = 1024
	maxValueLimit   = uint32(kvKvLimitKV_LIMIT_VAL_MAX) // KV_VAL_MAX in bpf/include/kv.h
	// memcached caps UDP reply datagrams at 1400 bytes including the frame.
	defaultReplyMax = 1400 - frameLen
	// DefaultSlowMemory is memcached's default -m.
	DefaultSlowMemory = 64 << 20
	// DefaultMaxConns is memcached's default -c.
	DefaultMaxConns = 1024
)

// Defaults of the UDP abuse limits (see the package comment).
const (
	// One datagram: what XDP sends at most, so a request cannot buy a
	// train of datagrams (memcached sends a 1 MB value as ~750).
	DefaultUDPReplyMax = defaultReplyMax
	// Per source address: far above one client's honest use on these
	// machines, and a bound on what a spoofed victim receives.
	DefaultUDPRate  = 64 << 20
	DefaultUDPBurst = 4 << 20
	// Unlimited turns a limit off (memcached has none).
	Unlimited = -1
)

// Config sizes the store at load time.
type Config struct {
	Port     uint16 // UDP (and TCP) port; DefaultPort if zero
	Entries  uint32 // map entries; DefaultEntries if zero
	MaxValue uint32 // largest value kept in the kernel; larger ones live in Go

	// SlowMemory bounds the bytes (keys and values) of the values the slow
	// path keeps, those larger than MaxValue; past it the least recently
	// used go, counted as evictions. DefaultSlowMemory if zero.
	SlowMemory int
	// MaxConns is how many TCP clients are served at once; memcached's
	// refusal answers the next. DefaultMaxConns if zero.
	MaxConns int
	// IdleTimeout closes a TCP connection that has sent no complete
	// request line for that long (memcached's -o idle_timeout). Zero, the
	// default as in memcached, never does: pooled clients and proxies keep
	// idle connections and would see errors, and MaxConns with the bounded
	// buffers of each connection already bounds what idle clients hold.
	IdleTimeout time.Duration

	// UDP abuse limits; the zero values are the defaults.
	NoUDP            bool  // serve TCP only: UDP to the port gets port unreachable
	UDPReplyMax      int   // largest UDP reply payload, bytes; larger get an error naming TCP
	UDPAmplification int   // a UDP reply at most this many times its request's payload; 0 no ratio
	UDPRate          int64 // reply bytes per second per source address, enforced in XDP
	UDPBurst         int64 // that budget's bucket, bytes

	// UDPZeroChecksum sends IPv4 replies from XDP with no UDP checksum
	// (0, which IPv4 allows and BMC does), saving the sum over each
	// reply. Off by default: the checksum is what catches a reply damaged
	// where no link CRC covers it, and memcached's own replies carry one.
	// IPv6 replies always carry one (IPv6 requires it).
	UDPZeroChecksum bool
}

// byDefault sets *v to d if it is zero: a zero Config field means the default.
func byDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

func (c *Config) normalize() error {
	byDefault(&c.Port, DefaultPort)
	byDefault(&c.Entries, DefaultEntries)
	byDefault(&c.MaxValue, DefaultMaxValue)
	byDefault(&c.UDPReplyMax, DefaultUDPReplyMax)
	byDefault(&c.UDPRate, DefaultUDPRate)
	byDefault(&c.UDPBurst, DefaultUDPBurst)
	byDefault(&c.SlowMemory, DefaultSlowMemory)
	byDefault(&c.MaxConns, DefaultMaxConns)
	if c.MaxValue < 64 || c.MaxValue > maxValueLimit {
		return fmt.Errorf("max value %d out of range: use 64..%d bytes (larger values are served by the slow path)", c.MaxValue, maxValueLimit)
	}
	switch {
	case c.SlowMemory < maxItemSize:
		return fmt.Errorf("slow path memory %d too small: use at least %d bytes (the largest item)", c.SlowMemory, maxItemSize)
	case c.MaxConns < 0 || c.IdleTimeout < 0:
		return errors.New("connection limit and idle timeout must not be negative")
	case c.UDPReplyMax < Unlimited || c.UDPReplyMax > 0 && c.UDPReplyMax < 64:
		return fmt.Errorf("UDP reply cap %d: use at least 64 bytes, or %d for none", c.UDPReplyMax, Unlimited)
	case c.UDPAmplification < 0:
		return fmt.Errorf("UDP amplification %d: use 1 or more, or 0 for no ratio cap", c.UDPAmplification)
	case c.UDPRate < Unlimited || c.UDPRate >= 1<<32:
		return fmt.Errorf("UDP rate %d bytes/s: use 1..%d, or %d for none", c.UDPRate, uint64(1<<32-1), Unlimited)
	case c.UDPBurst < 1500 && c.UDPRate != Unlimited:
		return fmt.Errorf("UDP burst %d bytes: use at least one datagram, 1500", c.UDPBurst)
	}
	if c.Entries < 16 {
		return fmt.Errorf("entries %d too small: use at least 16", c.Entries)
	}
	return nil
}

// Objects are the loaded BPF programs and maps of one store.
type Objects struct {
	cfg      Config
	objs     kvObjects
	token    uint16 // marks the slow path's own requests to the XDP program
	coarse   bool   // the program reads bpf_ktime_get_coarse_ns
	xdpBytes bool   // the program copies payloads with bpf_xdp_load_bytes/store_bytes
	addrsGen uint32 // addrs_gen as last written (SetAddrs)
	vsize    uint32 // map value size: header + capacity
}

var valHeaderSize = uint32(unsafe.Sizeof(kvKvVal{}))

// testCopyLoops makes Load keep the copy loops where the kernel has the
// load/store-bytes helpers, so tests on a new kernel cover what 5.10 runs.
var testCopyLoops bool

// valSlack is KV_VAL_SLACK: spare bytes after the data for 8-byte copies.
const valSlack = uint32(kvKvLimitKV_LIMIT_VAL_SLACK)

// Load sizes the maps, sets the program's constants and loads everything
// through the verifier. A rejection carries the verifier's last lines.
func Load(cfg Config) (*Objects, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}
	spec, err := loadKv()
	if err != nil {
		return nil, err
	}
	// The generated spec types name the maps and variables: a name
	// changed in C fails the build here, not the load.
	var specs kvSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, err
	}
	o := &Objects{cfg: cfg}
	capacity := (cfg.MaxValue + 7) &^ 7
	o.vsize = valHeaderSize + capacity + valSlack
	specs.Kv.MaxEntries = cfg.Entries
	specs.Kv.ValueSize = o.vsize
	var tok [2]byte
	for o.token == 0 {
		if _, err := rand.Read(tok[:]); err != nil {
			return nil, err
		}
		o.token = binary.BigEndian.Uint16(tok[:])
	}
	// A missing helper is a clean "not supported", anything else a real failure.
	coarse := uint8(0)
	switch err := features.HaveProgramHelper(ebpf.XDP, asm.FnKtimeGetCoarseNs); {
	case err == nil:
		coarse, o.coarse = 1, true
	case !errors.Is(err, ebpf.ErrNotSupported):
		return nil, fmt.Errorf("probe bpf_ktime_get_coarse_ns: %w", err)
	}
	bytesHelpers, err := bpfload.HaveXDPBytes()
	if err != nil {
		return nil, err
	}
	bytesHelpers = bytesHelpers && !testCopyLoops
	o.xdpBytes = bytesHelpers
	replyMax := uint32(defaultReplyMax)
	if cfg.UDPReplyMax != Unlimited {
		replyMax = min(replyMax, uint32(cfg.UDPReplyMax))
	}
	rate, burst := uint64(0), uint64(0)
	if cfg.UDPRate != Unlimited {
		rate, burst = uint64(cfg.UDPRate), uint64(cfg.UDPBurst)
	}
	udpOff, zeroCsum := uint8(0), uint8(0)
	if cfg.NoUDP {
		udpOff = 1
	}
	if cfg.UDPZeroChecksum {
		zeroCsum = 1
	}
	for _, set := range []struct {
		v   *ebpf.VariableSpec
		val any
	}{
		{specs.Port, cfg.Port}, {specs.ValCap, capacity}, {specs.ReplyMax, replyMax},
		{specs.SlowToken, o.token}, {specs.CoarseClock, coarse}, {specs.UdpOff, udpOff},
		{specs.AmpRatio, uint32(cfg.UDPAmplification)}, {specs.RateBytes, rate}, {specs.RateBurst, burst},
		{specs.UdpZeroCsum, zeroCsum}, {specs.XdpBytes, bpfload.Uint8(bytesHelpers)},
	} {
		if err := set.v.Set(set.val); err != nil {
			return nil, fmt.Errorf("set %s: %w", set.v.Name, err)
		}
	}
	if err := spec.LoadAndAssign(&o.objs, bpfload.Options()); err != nil {
		return nil, bpfload.Explain("store", err)
	}
	if err := o.SyncClock(); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// SyncClock tells the program how CLOCK_MONOTONIC maps to unix time, for
// memcached's absolute expiry times (the coarse clock, where used, trails it by
// at most a jiffy, far below expiry's one-second granularity).
func (o *Objects) SyncClock() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	off := time.Now().UnixNano() - ts.Nano()
	return o.objs.UnixOffsetNs.Set(off)
}

// Program is the XDP program to attach.
func (o *Objects) Program() *ebpf.Program { return o.objs.KvXdp }

// Config is the configuration the objects were loaded with.
func (o *Objects) Config() Config { return o.cfg }

// Close releases programs and maps.
func (o *Objects) Close() error { return o.objs.Close() }
