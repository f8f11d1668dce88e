package memcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func dialBoth(t *testing.T, addr string) map[string]*Client {
	t.Helper()
	u, err := DialUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close(); c.Close() })
	return map[string]*Client{"udp": u, "tcp": c}
}

func TestClientCommands(t *testing.T) {
	addr := startMemcached(t)
	for _, name := range []string{"udp", "tcp"} {
		t.Run(name, func(t *testing.T) {
			c := dialBoth(t, addr)[name]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			k := func(s string) string { return name + ":" + s }
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			wantErr := func(err, want error) {
				t.Helper()
				if !errors.Is(err, want) {
					t.Fatalf("got %v, want %v", err, want)
				}
			}

			v, err := c.Version(ctx)
			if err != nil || v != "1.6.18" {
				t.Fatalf("Version = %q, %v", v, err)
			}
			must(c.Set(ctx, Item{Key: k("a"), Value: []byte("1"), Flags: 42}))
			must(c.Set(ctx, Item{Key: k("b"), Value: []byte{}}))
			items, err := c.Get(ctx, k("a"), k("missing"), k("b"), k("a"))
			if err != nil || len(items) != 3 || string(items[0].Value) != "1" || items[0].Flags != 42 ||
				items[1].Key != k("b") || len(items[1].Value) != 0 || items[2].Key != k("a") {
				t.Fatalf("Get = %+v, %v", items, err)
			}
			wantErr(c.Add(ctx, Item{Key: k("a"), Value: []byte("x")}), ErrNotStored)
			must(c.Add(ctx, Item{Key: k("c"), Value: []byte("x")}))
			wantErr(c.Replace(ctx, Item{Key: k("nope"), Value: []byte("x")}), ErrNotStored)
			must(c.Replace(ctx, Item{Key: k("c"), Value: []byte("y")}))
			must(c.Append(ctx, Item{Key: k("c"), Value: []byte("z")}))
			must(c.Prepend(ctx, Item{Key: k("c"), Value: []byte("x")}))
			wantErr(c.Append(ctx, Item{Key: k("nope"), Value: []byte("x")}), ErrNotStored)
			items, err = c.Gets(ctx, k("c"))
			if err != nil || len(items) != 1 || string(items[0].Value) != "xyz" || items[0].CAS == 0 {
				t.Fatalf("Gets = %+v, %v", items, err)
			}
			it := items[0]
			it.Value = []byte("new")
			must(c.CAS(ctx, it))
			wantErr(c.CAS(ctx, it), ErrExists)
			it.Key = k("nope")
			wantErr(c.CAS(ctx, it), ErrNotFound)

			must(c.Set(ctx, Item{Key: k("n"), Value: []byte("10")}))
			if n, err := c.Incr(ctx, k("n"), 5); err != nil || n != 15 {
				t.Fatalf("Incr = %d, %v", n, err)
			}
			if n, err := c.Decr(ctx, k("n"), 100); err != nil || n != 0 {
				t.Fatalf("Decr = %d, %v", n, err)
			}
			_, err = c.Incr(ctx, k("nope"), 1)
			wantErr(err, ErrNotFound)
			_, err = c.Incr(ctx, k("c"), 1)
			var se *ServerError
			if !errors.As(err, &se) || se.Line != "CLIENT_ERROR cannot increment or decrement non-numeric value" {
				t.Fatalf("Incr non-numeric: %v", err)
			}

			must(c.Touch(ctx, k("a"), 1000))
			wantErr(c.Touch(ctx, k("nope"), 1000), ErrNotFound)
			must(c.Delete(ctx, k("a")))
			wantErr(c.Delete(ctx, k("a")), ErrNotFound)
			if err := c.Set(ctx, Item{Key: "bad key"}); err == nil {
				t.Fatal("Set with a space in the key: no error")
			}

			st, err := c.Stats(ctx)
			if err != nil || st["version"] != "1.6.18" || st["pid"] == "" {
				t.Fatalf("Stats = %v, %v", st, err)
			}
			if st, err := c.Stats(ctx, "settings"); err != nil || st["item_size_max"] != "1048576" {
				t.Fatalf("Stats settings = %v, %v", st["item_size_max"], err)
			}
			if _, err := c.Stats(ctx, "nonsense"); !errors.As(err, &se) {
				t.Fatalf("Stats nonsense: %v", err)
			}

			// Raw requests: noreply returns at once, rejected lines get
			// memcached's replies, several requests give one reply.
			if r, err := c.Do(ctx, []byte("set "+k("q")+" 0 0 1 noreply\r\nq\r\n")); r != nil || err != nil {
				t.Fatalf("noreply Do = %q, %v", r, err)
			}
			for in, want := range map[string]string{
				"set x 0 0\r\na\r\n":                       "ERROR\r\nERROR\r\n",
				"get " + key251 + "\r\n":                   badFormat,
				"version\r\nget " + k("q") + "\r\n":        "VERSION 1.6.18\r\nVALUE " + k("q") + " 0 1\r\nq\r\nEND\r\n",
				"incr x 1 noreply\r\ndelete x 1\r\n":       usage,
				"stats detail dump\r\n":                    "END\r\n",
				"verbosity 0\r\nflush_all 100 noreply\r\n": "OK\r\n",
			} {
				if r, err := c.Do(ctx, []byte(in)); err != nil || string(r) != want {
					t.Errorf("Do(%.60q) = %q, %v; want %q", in, r, err, want)
				}
			}
			must(c.FlushAll(ctx, 0))
			if items, err := c.Get(ctx, k("q"), k("c")); err != nil || len(items) != 0 {
				t.Fatalf("Get after FlushAll = %v, %v", items, err)
			}
		})
	}
}

// TestClientUDPDatagrams checks reassembly of replies split into many
// datagrams and messages, and that memcached drops multi-datagram requests.
func TestClientUDPDatagrams(t *testing.T) {
	addr := startMemcached(t)
	cs := dialBoth(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := bytes.Repeat([]byte("0123456789"), 20000) // 200 kB: 144 datagrams
	keys := []string{"big1", "small", "big2", "missing", "small"}
	if err := cs["tcp"].Set(ctx, Item{Key: "big1", Value: big}); err != nil {
		t.Fatal(err)
	}
	if err := cs["tcp"].Set(ctx, Item{Key: "big2", Value: big[:3000]}); err != nil {
		t.Fatal(err)
	}
	if err := cs["tcp"].Set(ctx, Item{Key: "small", Value: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	raw := []byte("gets " + strings.Join(keys, " ") + "\r\n")
	ru, err := cs["udp"].Do(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := cs["tcp"].Do(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ru, rt) || !bytes.Equal(NormalizeCAS(ru), NormalizeCAS(rt)) {
		t.Fatalf("UDP and TCP replies differ: %d vs %d bytes", len(ru), len(rt))
	}
	items, err := ParseItems(ru)
	if err != nil || len(items) != 4 || !bytes.Equal(items[0].Value, big) {
		t.Fatalf("ParseItems: %d items, %v", len(items), err)
	}

	// A request longer than one datagram goes out split; memcached drops it.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	err = cs["udp"].Set(short, Item{Key: "toolong", Value: big[:2000]})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("multi-datagram set: %v, want deadline exceeded", err)
	}
	// The client still works afterwards.
	if _, err := cs["udp"].Version(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClientConcurrentAndPipelined(t *testing.T) {
	addr := startMemcached(t)
	for name, c := range dialBoth(t, addr) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 50 {
						key := fmt.Sprintf("%s-%d-%d", name, g, i)
						val := []byte(strings.Repeat(key, i))
						if err := c.Set(ctx, Item{Key: key, Value: val}); err != nil {
							errs <- err
							return
						}
						items, err := c.Get(ctx, key)
						if err != nil || len(items) != 1 || !bytes.Equal(items[0].Value, val) {
							errs <- fmt.Errorf("get %s: %v %v", key, items, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			// Pipelining: many requests in flight, replies matched up. The
			// window stays well below what memcached's UDP receive buffer
			// (the kernel default, ~200 small datagrams) holds; a bigger
			// burst loses requests.
			const window = 64
			var calls []*Call
			check := func(i int) {
				reply, err := calls[i].Wait(ctx)
				want := fmt.Sprintf("VALUE %s-0-%d 0 ", name, i%50)
				if err != nil || !strings.HasPrefix(string(reply), want) {
					t.Fatalf("call %d: %.40q, %v", i, reply, err)
				}
			}
			for i := range 1000 {
				call, err := c.Send([]byte(fmt.Sprintf("get %s-0-%d\r\n", name, i%50)))
				if err != nil {
					t.Fatal(err)
				}
				calls = append(calls, call)
				if i >= window {
					check(i - window)
				}
			}
			for i := len(calls) - window; i < len(calls); i++ {
				check(i)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	addr := startMemcached(t)
	cs := dialBoth(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// A TCP call that gives up does not put later replies out of step.
	tcp := cs["tcp"]
	gaveUp, err := tcp.Send([]byte("get a\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if r, err := gaveUp.Wait(done); !errors.Is(err, context.Canceled) && string(r) != "END\r\n" {
		t.Fatalf("Wait with a cancelled context: %q, %v", r, err) // either is fine
	}
	if r, err := tcp.Do(ctx, []byte("version\r\n")); err != nil || string(r) != "VERSION 1.6.18\r\n" {
		t.Fatalf("after a cancelled call: %q, %v", r, err)
	}
	tcp.Close()
	if _, err := tcp.Version(ctx); err == nil {
		t.Fatal("Version after Close: no error")
	}

	// Nobody listening on UDP: the call fails instead of hanging.
	dead, err := DialUDP(fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if _, err := dead.Version(short); err == nil {
		t.Fatal("Version with no server: no error")
	}
}
