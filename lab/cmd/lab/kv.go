package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
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
	port := fs.Uint("port", kv.DefaultPort, "UDP and TCP port")
	entries := fs.Uint("entries", kv.DefaultEntries, "items the kernel map holds before LRU eviction")
	maxValue := fs.Uint("max-value", kv.DefaultMaxValue, "largest value kept in the kernel (64..1024); larger ones live in the slow path")
	listen := fs.String("listen", "", "address the slow path binds (default: all)")
	mode := fs.String("mode", kv.ModeNative, "XDP attach mode: native, generic or auto")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dev == "" || fs.NArg() > 0 {
		return usageError{"usage: lab kv serve --dev IFACE [--netns NAME] [--port N] [--entries N] [--max-value BYTES]"}
	}
	if *port == 0 || *port > 65535 || *entries > 1<<31 || *maxValue > 1<<20 {
		return usageError{"--port must be 1..65535, --entries at most 2^31, --max-value at most 1024"}
	}
	if os.Geteuid() != 0 {
		return usageError{"lab kv serve needs root (BPF and XDP): run it with sudo"}
	}
	o, err := kv.Load(kv.Config{Port: uint16(*port), Entries: uint32(*entries), MaxValue: uint32(*maxValue)})
	if err != nil {
		return err
	}
	defer o.Close()
	srv := kv.NewServer(o)

	// Attach and bind inside the namespace; the attachment and the sockets
	// stay there after the thread switches back.
	var how string
	var detach func() error
	err = inNetns(*ns, func() error {
		// `lab up` leaves a placeholder XDP_PASS on every veth end (XDP_TX
		// and XDP_REDIRECT from the peer need one): the store takes its
		// place and puts it back when it goes.
		took, err := netlab.TakeXDPPass(*dev)
		if err != nil {
			return fmt.Errorf("inspect XDP on %s: %w", *dev, err)
		}
		l, m, err := o.Attach(*dev, *mode)
		if err != nil {
			if took {
				netlab.PutXDPPass(*dev)
			}
			return err
		}
		how = m
		detach = func() error {
			err := l.Close()
			if took {
				err = errors.Join(err, inNetns(*ns, func() error { return netlab.PutXDPPass(*dev) }))
			}
			return err
		}
		if err := srv.Listen(*listen); err != nil {
			detach()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := detach(); err != nil {
			fmt.Fprintln(os.Stderr, "lab kv serve: detach:", err)
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	udp, tcp := srv.Addrs()
	where := *dev
	if *ns != "" {
		where += " in netns " + *ns
	}
	fmt.Printf("serving memcached on %s: XDP (%s mode) answers UDP port %d; slow path on udp %s and tcp %s; %d entries, values up to %d bytes in the kernel\n",
		where, how, *port, udp, tcp, *entries, o.Config().MaxValue)
	err = srv.Serve(ctx)
	fmt.Println("detached from", where)
	return err
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
