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
	maxValueLimit   = 1024 // KV_VAL_MAX in bpf/include/kv.h
	// memcached caps UDP reply datagrams at 1400 bytes including the frame.
	defaultReplyMax = 1400 - frameLen
	// DefaultSlowMemory is memcached's default -m.
	DefaultSlowMemory = 64 << 20
	// DefaultMaxConns is memcached's default -c.
	DefaultMaxConns = 1024
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
}

func (c *Config) normalize() error {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Entries == 0 {
		c.Entries = DefaultEntries
	}
	if c.MaxValue == 0 {
		c.MaxValue = DefaultMaxValue
	}
	if c.MaxValue < 64 || c.MaxValue > maxValueLimit {
		return fmt.Errorf("max value %d out of range: use 64..%d bytes (larger values are served by the slow path)", c.MaxValue, maxValueLimit)
	}
	if c.SlowMemory == 0 {
		c.SlowMemory = DefaultSlowMemory
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.SlowMemory < maxItemSize {
		return fmt.Errorf("slow path memory %d too small: use at least %d bytes (the largest item)", c.SlowMemory, maxItemSize)
	}
	if c.MaxConns < 0 || c.IdleTimeout < 0 {
		return errors.New("connection limit and idle timeout must not be negative")
	}
	if c.Entries < 16 {
		return fmt.Errorf("entries %d too small: use at least 16", c.Entries)
	}
	return nil
}

// Objects are the loaded BPF programs and maps of one store.
type Objects struct {
	cfg    Config
	objs   kvObjects
	token  uint16 // marks the slow path's own requests to the XDP program
	coarse bool   // the program reads bpf_ktime_get_coarse_ns
	vsize  uint32 // map value size: header + capacity
}

var valHeaderSize = uint32(unsafe.Sizeof(kvKvVal{}))

// valSlack is KV_VAL_SLACK: spare bytes after the data for 8-byte copies.
const valSlack = 32

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
	o := &Objects{cfg: cfg}
	capacity := (cfg.MaxValue + 7) &^ 7
	o.vsize = valHeaderSize + capacity + valSlack
	spec.Maps["kv"].MaxEntries = cfg.Entries
	spec.Maps["kv"].ValueSize = o.vsize
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
	for name, v := range map[string]any{
		"port": cfg.Port, "val_cap": capacity, "reply_max": uint32(defaultReplyMax), "slow_token": o.token,
		"coarse_clock": coarse,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
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
