package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/vishvananda/netns"
	"github.com/xdplab/xdplab/lab/kv"
	"github.com/xdplab/xdplab/lab/netlab"
)

func init() {
	register(command{name: "kv serve", summary: "serve the XDP key-value store on an interface", run: kvServe})
}

func kvServe(args []string) error {
	fs := newFlags("kv serve")
	dev := fs.String("dev", "", "interface to attach to (required)")
	ns := fs.String("netns", "", "named network namespace (/run/netns/NAME) to serve in")
	useLab := fs.Bool("lab", false, "serve a store on every kv host of the lab 'lab up' built (each on its interface towards the proxy), in this one process")
	port := fs.Uint("port", kv.DefaultPort, "UDP and TCP port")
	entries := fs.Uint("entries", kv.DefaultEntries, "items the kernel map holds before LRU eviction")
	maxValue := fs.Uint("max-value", kv.DefaultMaxValue, "largest value kept in the kernel (64..1024); larger ones live in the slow path")
	slowMB := fs.Uint("slow-memory", kv.DefaultSlowMemory>>20, "megabytes of values the slow path keeps (at least 1), least recently used evicted first, as memcached's -m")
	maxConns := fs.Uint("max-conns", kv.DefaultMaxConns, "TCP clients served at once, as memcached's -c")
	idle := fs.Duration("idle-timeout", 0, "close TCP connections idle this long (0: never, as memcached's idle_timeout)")
	listen := fs.String("listen", "", "address the slow path binds (default: all)")
	mode := fs.String("mode", kv.ModeNative, "XDP attach mode: native, generic or auto")
	noUDP := fs.Bool("no-udp", false, "serve TCP only (memcached's -U 0): UDP to the port gets port unreachable")
	udpMax := fs.Int("udp-reply-max", kv.DefaultUDPReplyMax, "largest UDP reply in bytes; larger ones get an error naming TCP (-1: no cap, as memcached)")
	udpAmp := fs.Int("udp-amplification", 0, "a UDP reply at most this many times its request (0: no ratio cap)")
	udpRate := fs.Int64("udp-rate", kv.DefaultUDPRate, "UDP reply bytes per second per source address, enforced in XDP (-1: no limit)")
	udpBurst := fs.Int64("udp-burst", kv.DefaultUDPBurst, "bytes a source may receive at once before --udp-rate applies")
	zeroCsum := fs.Bool("udp-zero-checksum", false, "send IPv4 replies from XDP without a UDP checksum (0, as IPv4 allows): cheaper per reply, but a damaged reply goes unnoticed; IPv6 replies always carry one")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *useLab && (*dev != "" || *ns != "" || *listen != "") {
		return usageError{"--lab gives each store's namespace and interface: drop --netns, --dev and --listen"}
	}
	if !*useLab && *dev == "" || fs.NArg() > 0 {
		return usageError{"usage: lab kv serve --dev IFACE [--netns NAME] [--port N] [--entries N] [--max-value BYTES], or lab kv serve --lab [...]"}
	}
	if *port == 0 || *port > 65535 || *entries > 1<<31 || *maxValue > 1<<20 {
		return usageError{"--port must be 1..65535, --entries at most 2^31, --max-value at most 1024"}
	}
	if *slowMB == 0 || *slowMB > 1<<30 || *maxConns == 0 || *maxConns > 1<<20 || *idle < 0 {
		return usageError{"--slow-memory must be 1..2^30 MB, --max-conns 1..2^20, --idle-timeout not negative"}
	}
	if os.Geteuid() != 0 {
		return usageError{"lab kv serve needs root (BPF and XDP): run it with sudo"}
	}
	where := []kvPlace{{netns: *ns, dev: *dev}}
	if *useLab {
		r, err := labStatus()
		if err != nil {
			return err
		}
		where = where[:0]
		for _, h := range r.Hosts {
			if h.Role == "kv" {
				where = append(where, kvPlace{netns: h.NetNS, dev: h.Dev})
			}
		}
		if len(where) == 0 {
			return errors.New("the lab has no kv hosts: lab up --backends N")
		}
		unregister, err := currentLabDir().serving("lab kv serve --lab")
		if err != nil {
			return err
		}
		defer unregister()
	}
	cfg := kv.Config{Port: uint16(*port), Entries: uint32(*entries), MaxValue: uint32(*maxValue),
		NoUDP: *noUDP, UDPReplyMax: *udpMax, UDPAmplification: *udpAmp, UDPRate: *udpRate, UDPBurst: *udpBurst, UDPZeroChecksum: *zeroCsum,
		SlowMemory: int(*slowMB) << 20, MaxConns: int(*maxConns), IdleTimeout: *idle}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The GC would otherwise let the heap grow to twice the values
		// kept; a soft limit above them keeps RSS near memcached's -m.
		debug.SetMemoryLimit(int64(cfg.SlowMemory)*int64(len(where)) + 64<<20)
	}
	var stores []*kvStore
	defer func() {
		for _, st := range stores {
			if err := st.stop(); err != nil {
				fmt.Fprintln(os.Stderr, "lab kv serve: detach:", err)
			}
		}
	}()
	for _, pl := range where {
		st, err := startKV(pl, cfg, *mode, *listen)
		if err != nil {
			return err
		}
		stores = append(stores, st)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, len(stores))
	for _, st := range stores {
		udp, tcp := st.srv.Addrs()
		udpSays := fmt.Sprintf("XDP (%s mode) answers UDP port %d; slow path on udp %s and", st.how, *port, udp)
		if udp == nil {
			udpSays = "UDP off; slow path on"
		}
		fmt.Printf("serving memcached on %s: %s tcp %s; %d entries, values up to %d bytes in the kernel\n",
			st.where, udpSays, tcp, *entries, st.o.Config().MaxValue)
		go func() { errc <- st.srv.Serve(ctx) }()
	}
	var err error
	for range stores {
		// One store failing ends them all: the lab is served whole or not.
		if e := <-errc; e != nil {
			err = errors.Join(err, e)
			stop()
		}
	}
	for _, st := range stores {
		fmt.Println("detached from", st.where)
	}
	return err
}

// kvPlace is where a store serves: an interface in a namespace.
type kvPlace struct{ netns, dev string }

// kvStore is one store serving at its place.
type kvStore struct {
	o     *kv.Objects
	srv   *kv.Server
	where string // for people: "dev in netns ns"
	how   string // the XDP mode attached in
	stop  func() error
}

// startKV loads a store, attaches it at pl and binds its slow path there
// (the attachment and the sockets stay in the namespace after the thread
// switches back); stop detaches and releases it.
func startKV(pl kvPlace, cfg kv.Config, mode, listen string) (*kvStore, error) {
	o, err := kv.Load(cfg)
	if err != nil {
		return nil, err
	}
	st := &kvStore{o: o, srv: kv.NewServer(o), where: pl.dev}
	if pl.netns != "" {
		st.where += " in netns " + pl.netns
	}
	err = inNetns(pl.netns, func() error {
		// `lab up` leaves a placeholder XDP_PASS on every veth end (XDP_TX
		// and XDP_REDIRECT from the peer need one): the store takes its
		// place and puts it back when it goes.
		took, err := netlab.TakeXDPPass(pl.dev)
		if err != nil {
			return fmt.Errorf("inspect XDP on %s: %w", pl.dev, err)
		}
		l, m, err := o.Attach(pl.dev, mode)
		if err != nil {
			if took {
				netlab.PutXDPPass(pl.dev)
			}
			return err
		}
		st.how = m
		detach := func() error {
			err := l.Close()
			if took {
				err = errors.Join(err, inNetns(pl.netns, func() error { return netlab.PutXDPPass(pl.dev) }))
			}
			return err
		}
		st.stop = func() error { return errors.Join(detach(), o.Close()) }
		if err := st.srv.Listen(listen); err != nil {
			detach()
			return err
		}
		return nil
	})
	if err != nil {
		o.Close()
		return nil, err
	}
	return st, nil
}

// inNetns runs fn with the calling OS thread in the named namespace ("" =
// the current one) and puts the thread back afterwards.
func inNetns(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("no network namespace %q (see `ip netns list`): %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %q: %w", name, err)
	}
	defer netns.Set(orig)
	return fn()
}
