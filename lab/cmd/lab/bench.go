package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"github.com/xdplab/xdplab/lab/bench"
)

func init() {
	register(command{name: "bench", summary: "load a memcached server: bench --addr HOST:PORT [--tcp] [--duration 10s --get-ratio 0.9 ...]", run: benchRun})
}

func benchRun(args []string) error {
	fs := newFlags("bench")
	d := bench.DefaultWorkload()
	addr := fs.String("addr", "", "memcached address to load, HOST:PORT (required)")
	tcp := fs.Bool("tcp", false, "speak TCP, --inflight requests pipelined per connection (nutcracker's clients do), instead of UDP")
	name := fs.String("name", "", "label of the result (default: the address)")
	ns := fs.String("netns", "", "open the client sockets in this network namespace (a name under /run/netns, or a path)")
	asJSON := fs.Bool("json", false, "print the result as JSON instead of a Markdown table")
	client := fs.String("client", bench.ClientPinned, "UDP client engine: "+bench.ClientPinned+" (pinned threads, fewer than CPUs, batches sent with UDP GSO) or "+bench.ClientNetpoll+" (a goroutine per socket through Go's netpoller, the first client)")
	w := d
	fs.DurationVar(&w.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&w.Warmup, "warmup", d.Warmup, "load before measuring, not counted")
	fs.DurationVar(&w.Timeout, "timeout", d.Timeout, "a request unanswered this long counts as lost")
	fs.Float64Var(&w.GetRatio, "get-ratio", 0.9, "fraction of requests that are GETs (the rest are SETs)")
	fs.IntVar(&w.Keys, "keys", d.Keys, "distinct keys, picked uniformly")
	fs.IntVar(&w.KeySize, "key-size", d.KeySize, "key size in bytes")
	fs.IntVar(&w.ValueSize, "value-size", d.ValueSize, "SET value size in bytes")
	fs.IntVar(&w.MultiGet, "multiget", d.MultiGet, "keys per GET")
	fs.IntVar(&w.InFlight, "inflight", d.InFlight, "requests in flight per socket")
	fs.IntVar(&w.Sockets, "sockets", d.Sockets, "client sockets")
	fs.BoolVar(&w.Preload, "preload", true, "set every key once before the run, so GETs hit")
	fs.StringVar(&w.KeyPrefix, "prefix", d.KeyPrefix, "start of every key")
	fs.Uint64Var(&w.Seed, "seed", d.Seed, "seed of the key sequence")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *addr == "" || fs.NArg() > 0 {
		return usageError{"usage: lab bench --addr HOST:PORT [--duration 10s] [--get-ratio 0.9] [--netns NAME] ... (see lab bench -h)"}
	}
	t := bench.Target{Name: *name, Addr: *addr, Network: "udp", Client: *client}
	if *tcp {
		t.Network = "tcp"
	}
	if *ns != "" {
		path := *ns
		if !strings.ContainsRune(path, '/') {
			path = filepath.Join("/run/netns", path)
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("network namespace %s: %w (list them with ip netns list)", *ns, err)
		}
		t.Dial = func(network, a string) (net.Conn, error) { return dialIn(path, network, a) }
	}
	ctx, cancel := signalContext()
	defer cancel()
	what := fmt.Sprintf("%v warm-up, then %v", w.Warmup, w.Duration)
	if w.Preload {
		what = fmt.Sprintf("preloading %d keys, %s", w.Keys, what)
	}
	fmt.Fprintf(os.Stderr, "lab bench: %s %s: %s (Ctrl-C ends early)\n", t.Network, *addr, what)
	r, err := bench.Run(ctx, t, w)
	if err != nil {
		return err
	}
	if *asJSON {
		js, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		fmt.Println(string(js))
		return nil
	}
	fmt.Print(bench.MarkdownTable(r))
	return nil
}

// dialIn opens a UDP socket inside the namespace at path: the socket stays
// there after the thread switches back.
func dialIn(path, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return nil, fmt.Errorf("enter %s: %w", path, err)
	}
	c, err := net.Dial(network, addr)
	if serr := netns.Set(orig); serr != nil {
		// This thread is stuck in the other namespace: keep it locked so
		// the runtime retires it rather than reuse it.
		runtime.LockOSThread()
	}
	return c, err
}
