package workshop

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
)

// Lesson 5's checks.
const (
	CheckSetStored     = "a set is answered STORED"
	CheckSetThenGet    = "what a set stores, a get returns, as memcached would"
	CheckSetNoreply    = "a set with noreply stores and answers nothing (XDP_DROP)"
	CheckSetOverwrite  = "a second set of a key replaces the first, a shorter value too"
	CheckSetLeaves     = "sets XDP does not take (expiry, long values, bad data) pass to the kernel untouched"
	CheckSetLock       = "items carries a bpf_spin_lock, taken by get and by set"
	CheckSetConcurrent = "sets and gets on every CPU at once never tear a reply"
	CheckSetVeth       = "on a veth pair: sets and gets answered byte for byte as memcached answers them"
)

func init() {
	checks := []Check{
		{Name: CheckReplyPass, Run: replyPass},
		{Name: CheckGetMiss, Run: replyText},
		{Name: CheckGetHit, Run: getHit},
		{Name: CheckGetSizes, Run: getSizes},
		{Name: CheckSetStored, Run: setStored,
			Hint: "set() returns XDP_PASS until you write it (TODO 2): look the key up; if it is there, copy s->out into it under its lock, else bpf_map_update_elem(&items, &s->k, &s->lock_space, BPF_NOEXIST); then reply STORED\\r\\n"},
		{Name: CheckSetThenGet, Run: setThenGet},
		{Name: CheckSetNoreply, Run: setNoreply},
		{Name: CheckSetOverwrite, Run: setOverwrite},
		{Name: CheckSetLeaves, Run: setLeaves},
		{Name: CheckSetLock, Run: setLock,
			Hint: "bpf_spin_lock(&it->lock); s->out = it->r; bpf_spin_unlock(&it->lock); in get (TODO 1), and the same the other way round in set"},
		{Name: CheckSetConcurrent, Run: setConcurrent},
		{Name: CheckGetCount, Run: getCount},
	}
	checks = append(checks, lesson1Checks...)
	checks = append(checks, Check{Name: CheckSetVeth, Run: setVeth})
	register(&Lesson{N: 5, Slug: "set", Title: "SET with locks", Program: "xdp_prog", Checks: checks})
}

// setCmd is the memcached set that stores it.
func (it item) setCmd(noreply bool) string {
	nr := ""
	if noreply {
		nr = " noreply"
	}
	return fmt.Sprintf("set %s %d 0 %d%s\r\n%s\r\n", it.key, it.flags, len(it.value), nr, it.value)
}

// store sends it's set through the program and wants STORED back.
func (e *Env) store(it item) error {
	r, err := e.reply(Request(0x5e7, it.setCmd(false)))
	if err != nil {
		return err
	}
	if string(r.Payload) != "STORED\r\n" || r.ID != 0x5e7 {
		return fmt.Errorf("%q was answered %q (request id %d), want \"STORED\\r\\n\" (id %d)", short(it.setCmd(false)), r.Payload, r.ID, 0x5e7)
	}
	return nil
}

func setStored(e *Env) error { return e.store(item{key: "foo", flags: 5, value: "bar"}) }

func setThenGet(e *Env) error {
	for _, it := range sizedItems() {
		if err := e.store(it); err != nil {
			return err
		}
		if err := e.expectReply(it.key, it.memcachedReply()); err != nil {
			return fmt.Errorf("after %q: %w", short(it.setCmd(false)), err)
		}
	}
	return nil
}

func setNoreply(e *Env) error {
	it := item{key: "quiet", flags: 1, value: "shh"}
	act, _, err := e.Run(Request(1, it.setCmd(true)).Frame())
	if err != nil {
		return err
	}
	if act != XDPDrop {
		return fmt.Errorf("%q came back %s; with noreply there is nothing to send: XDP_DROP", short(it.setCmd(true)), ActionName(act))
	}
	return e.expectReply(it.key, it.memcachedReply())
}

func setOverwrite(e *Env) error {
	long := item{key: "over", value: strings.Repeat("L", valMax)}
	shortItem := item{key: "over", flags: 9, value: "s"}
	for _, it := range []item{long, shortItem} {
		if err := e.store(it); err != nil {
			return err
		}
	}
	return e.expectReply(shortItem.key, shortItem.memcachedReply())
}

// setsToLeave are sets memcached takes (or answers with an error) that XDP
// leaves to the kernel, each named.
var setsToLeave = map[string]string{
	"set keep 0 100 1\r\nx\r\n":                                   "an expiry time",
	"set keep 0 0 65\r\n" + strings.Repeat("x", 65) + "\r\n":      "a 65-byte value (XDP keeps 64)",
	"set keep 0 0 5\r\nab\r\n":                                    "data shorter than its length",
	"set keep 0 0 1\r\nabc\r\n":                                   "data longer than its length",
	"set keep 01 0 1\r\nx\r\n":                                    "flags with a leading zero",
	"set keep 4294967296 0 1\r\nx\r\n":                            "flags past 32 bits",
	"set keep 0 0 1\r\nx":                                         "data without its \\r\\n",
	"set keep 0 0 1 noreply extra\r\nx\r\n":                       "a word after noreply",
	"set keep 0 0\r\nx\r\n":                                       "no length",
	"set " + strings.Repeat("k", 251) + " 0 0 1\r\nx\r\n":         "a 251-byte key",
	"set keep 0 0 1\r\nx\r\nget keep\r\n":                         "two requests in one datagram",
	"set keep -1 0 1\r\nx\r\n":                                    "negative flags",
	"set keep 0 0 1\r\nx\r\n" + strings.Repeat(" ", 600) + "\r\n": "a request longer than XDP reads",
}

func setLeaves(e *Env) error {
	keep := item{key: "keep", value: "kept"}
	if err := e.store(keep); err != nil {
		return err
	}
	for req, what := range setsToLeave {
		act, _, err := e.Run(Request(1, req).Frame())
		if err != nil {
			return err
		}
		if act != XDPPass {
			return fmt.Errorf("a set with %s, %q, came back %s; want XDP_PASS", what, short(req), ActionName(act))
		}
		if err := e.expectReply(keep.key, keep.memcachedReply()); err != nil {
			return fmt.Errorf("a set with %s, %q, changed the item: %w", what, short(req), err)
		}
	}
	return nil
}

func setLock(e *Env) error {
	ms, ok := e.spec.Maps["items"]
	if !ok {
		return errors.New("your program has no map \"items\"")
	}
	st, ok := btf.UnderlyingType(ms.Value).(*btf.Struct)
	if !ok || !hasSpinLock(st) {
		return fmt.Errorf("items' value (%v) has no struct bpf_spin_lock member: keep the starter's struct item", ms.Value)
	}
	calls := 0
	for _, ins := range e.spec.Programs[e.lesson.Program].Instructions {
		if ins.IsBuiltinCall() && asm.BuiltinFunc(ins.Constant) == asm.FnSpinLock {
			calls++
		}
	}
	if calls < 2 {
		return fmt.Errorf("the program calls bpf_spin_lock in %d place(s); get and set must each take the item's lock", calls)
	}
	return nil
}

func hasSpinLock(st *btf.Struct) bool {
	for _, m := range st.Members {
		if s, ok := btf.UnderlyingType(m.Type).(*btf.Struct); ok && s.Name == "bpf_spin_lock" {
			return true
		}
	}
	return false
}

// setConcurrent runs, on every CPU at once (each goroutine pinned to one),
// sets that switch a key between a long and a short value and gets of it:
// every reply must be one of the two values whole. Without the lock a get
// can copy half of one and half of the other.
func setConcurrent(e *Env) error {
	a := item{key: "race", flags: 1, value: strings.Repeat("a", valMax)}
	b := item{key: "race", flags: 2, value: "b"}
	if err := e.store(a); err != nil {
		return err
	}
	want := map[string]bool{a.memcachedReply(): true, b.memcachedReply(): true}
	rounds := 4000
	if e.short {
		rounds = 400
	}
	cpus := runtime.NumCPU()
	workers := max(2, cpus) * 2
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Locked and never unlocked: the thread, pinned below, ends
			// with the goroutine instead of serving others.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(w % cpus)
			_ = unix.SchedSetaffinity(0, &set) // best effort: spread over the CPUs
			frames := [][]byte{Request(1, a.setCmd(false)).Frame(), Request(1, b.setCmd(false)).Frame()}
			get := Request(2, "get race\r\n").Frame()
			for i := range rounds {
				if w%2 == 0 {
					if _, _, err := e.Run(frames[i%2]); err != nil {
						errs <- err
						return
					}
					continue
				}
				act, out, err := e.Run(get)
				if err != nil {
					errs <- err
					return
				}
				r, err := frame.Parse(out)
				if act != XDPTX || err != nil {
					errs <- fmt.Errorf("a get while sets ran came back %s (%v)", ActionName(act), err)
					return
				}
				if !want[string(r.Payload)] {
					errs <- fmt.Errorf("a get while sets ran on other CPUs returned a torn reply:\n  %q\nwant one of the two values whole", r.Payload)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// setVeth sends the same sets and gets to a real memcached and to the
// program, over real sockets, and compares every reply.
func setVeth(e *Env) error {
	var reqs []string
	for _, it := range append(sizedItems(), item{key: "k", flags: 3, value: "replaced"}) {
		reqs = append(reqs, it.setCmd(false), "get "+it.key+"\r\n")
	}
	reqs = append(reqs, "get missing\r\n")
	return e.withMemcached(func(ctx context.Context, oracle, store *memcache.Client) error {
		for _, req := range reqs {
			if err := compareReplies(ctx, oracle, store, req); err != nil {
				return err
			}
		}
		return nil
	})
}
