package workshop

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
	"github.com/xdplab/xdplab/lab/peer"
)

// Lesson 4's hit counter, and the sizes of its structs.
const (
	cHit    = 5
	keySize = 4 + keyMax + 2 // struct key: len, data, padding to 4 bytes
	// valMax is the longest value whose reply fits with a 250-byte key
	// and 10-digit flags.
	valMax = 64
)

// itemLayouts are the shapes of struct item, by size: lesson 4's (len,
// reply[384]) and lesson 5's (a bpf_spin_lock first, reply[512]).
var itemLayouts = map[uint32]struct{ replyOff, replyMax int }{
	4 + 384:     {0, 384},
	4 + 4 + 512: {4, 512},
}

// Lesson 4's checks.
const (
	CheckGetMiss  = "a get of a missing key is still answered END"
	CheckGetHit   = "a get of a stored key is answered with its item's reply, then END"
	CheckGetSizes = "keys of 1 to 250 bytes, values of 0 to 64 bytes, any bytes in a value"
	CheckGetCount = "hits are counted in counters[C_HIT], gets in counters[C_GET]"
	CheckGetVeth  = "on a veth pair: replies are byte for byte memcached's"
)

func init() {
	checks := []Check{
		{Name: CheckReplyPass, Run: replyPass},
		{Name: CheckGetMiss, Run: replyText},
		{Name: CheckReplyAddr, Run: replyAddr},
		{Name: CheckGetHit, Run: getHit,
			Hint: "TODO 1: __builtin_memset(k, 0, sizeof(*k)) before read_key, then it = bpf_map_lookup_elem(&items, k): the checker stored the key zero-padded, and a hash map compares every byte"},
		{Name: CheckGetSizes, Run: getSizes,
			Hint: "the frame grows by up to 380 bytes: check every byte you copy against data_end, and step q by len & 511 so the verifier knows the range"},
		{Name: CheckGetCount, Run: getCount},
	}
	checks = append(checks, lesson1Checks...)
	checks = append(checks, Check{Name: CheckGetVeth, Run: getVeth,
		Hint: "a reply wrong by one byte is what this check finds: compare the two replies in the message"})
	register(&Lesson{N: 4, Slug: "get", Title: "serve GET from a map", Program: "xdp_prog", Checks: checks})
}

// item is a key and its value as the checks store them.
type item struct {
	key   string
	flags uint32
	value string
}

// storeItem puts it in the program's items map: struct key (len, data,
// zero padding) to struct item, whose reply is formatted here.
func (e *Env) storeItem(it item) error {
	m, err := e.Map("items")
	if err != nil {
		return err
	}
	l, ok := itemLayouts[m.ValueSize()]
	if m.KeySize() != keySize || !ok {
		return fmt.Errorf("items maps %d-byte keys to %d-byte values; want the starter's struct key (%d bytes) and struct item", m.KeySize(), m.ValueSize(), keySize)
	}
	v := make([]byte, m.ValueSize())
	reply := it.valueReply()
	binary.NativeEndian.PutUint32(v[l.replyOff:], uint32(len(reply)))
	copy(v[l.replyOff+4:], reply)
	return m.Put(it.mapKey(), v)
}

// mapKey is it's key as struct key.
func (it item) mapKey() []byte {
	k := make([]byte, keySize)
	binary.NativeEndian.PutUint32(k, uint32(len(it.key)))
	copy(k[4:], it.key)
	return k
}

// valueReply is memcached's VALUE block for it.
func (it item) valueReply() string {
	return fmt.Sprintf("VALUE %s %d %d\r\n%s\r\n", it.key, it.flags, len(it.value), it.value)
}

// memcachedReply is what memcached 1.6 answers a get of it, reassembled.
func (it item) memcachedReply() string { return it.valueReply() + "END\r\n" }

// expectReply runs a get of key through the program and compares the reply.
func (e *Env) expectReply(key, want string) error {
	req := Request(0x4242, "get "+key+"\r\n")
	r, err := e.reply(req)
	if err != nil {
		return err
	}
	if string(r.Payload) != want {
		return fmt.Errorf("the reply to \"get %s\" is\n  %q\nwant\n  %q", short(key), r.Payload, want)
	}
	if r.ID != req.ID || r.Total != 1 || r.Seq != 0 {
		return fmt.Errorf("the reply to \"get %s\" has id %d, seq %d, total %d; want %d, 0, 1", short(key), r.ID, r.Seq, r.Total, req.ID)
	}
	return nil
}

func getHit(e *Env) error {
	it := item{key: "foo", value: "bar"}
	if err := e.storeItem(it); err != nil {
		return err
	}
	return e.expectReply(it.key, it.memcachedReply())
}

// sizedItems are items at the edges of what the program must serve.
func sizedItems() []item {
	return []item{
		{key: "k", value: "v"},
		{key: "empty", value: ""},
		{key: strings.Repeat("K", keyMax), flags: 4294967295, value: strings.Repeat("V", valMax)},
		{key: "flags", flags: 123456789, value: "0123456789"},
		{key: "binary", flags: 1, value: "\x00\x01\r\n\xff"},
	}
}

func getSizes(e *Env) error {
	for _, it := range sizedItems() {
		if err := e.storeItem(it); err != nil {
			return err
		}
		if err := e.expectReply(it.key, it.memcachedReply()); err != nil {
			return err
		}
	}
	return nil
}

func getCount(e *Env) error {
	if err := e.ResetCounters("counters"); err != nil {
		return err
	}
	if err := e.storeItem(item{key: "counted", value: "1"}); err != nil {
		return err
	}
	if err := e.runAll("get counted\r\n", "get counted\r\n", "get not-there\r\n"); err != nil {
		return err
	}
	get, err := e.Counter("counters", cGet)
	if err != nil {
		return err
	}
	hit, err := e.Counter("counters", cHit)
	if err != nil {
		return err
	}
	if get != 3 || hit != 2 {
		return fmt.Errorf("after 2 gets of a stored key and 1 of a missing one, counters[C_GET] is %d and counters[C_HIT] %d; want 3 and 2", get, hit)
	}
	return nil
}

// withMemcached runs fn on the veth pair with a real memcached on the
// client's loopback: oracle is a memcache client for it, store one for the
// program's server, both in the client's namespace.
func (e *Env) withMemcached(fn func(ctx context.Context, oracle, store *memcache.Client) error) error {
	p, err := e.Pair()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	oracle, store, stop, err := p.clientsWithMemcached(ctx)
	if err != nil {
		return err
	}
	defer stop()
	return fn(ctx, oracle, store)
}

// clientsWithMemcached starts memcached for withMemcached and returns the
// clients and a func that stops it all.
func (p *pair) clientsWithMemcached(ctx context.Context) (oracle, store *memcache.Client, stop func(), err error) {
	lo := netip.MustParseAddr("127.0.0.1")
	mc, err := peer.StartMemcached(ctx, p.client, peer.MemcachedOptions{Addrs: []netip.Addr{lo}, Threads: 1})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("starting memcached to compare with: %w", err)
	}
	err = p.client.Do(func() (err error) {
		if oracle, err = memcache.DialUDP(netip.AddrPortFrom(lo, memcache.DefaultPort).String()); err != nil {
			return err
		}
		store, err = memcache.DialUDP(p.ServerAddr(memcache.DefaultPort).String())
		return err
	})
	stop = func() {
		for _, c := range []*memcache.Client{oracle, store} {
			if c != nil {
				c.Close()
			}
		}
		mc.Stop()
	}
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return oracle, store, stop, nil
}

// getVeth stores the same items in the program's map and in a real
// memcached, sends the same gets to both from the client, and compares the
// replies as a memcached client reassembles them.
func getVeth(e *Env) error {
	return e.withMemcached(func(ctx context.Context, oracle, store *memcache.Client) error {
		return getVethWith(ctx, e, oracle, store)
	})
}

func getVethWith(ctx context.Context, e *Env, oracle, store *memcache.Client) error {
	items := append(sizedItems(), item{key: "foo", value: "bar"})
	for _, it := range items {
		if err := e.storeItem(it); err != nil {
			return err
		}
		if r, err := oracle.Do(ctx, []byte(it.setCmd(false))); err != nil || string(r) != "STORED\r\n" {
			return fmt.Errorf("memcached answered a set with %q, %v", r, err)
		}
	}
	for _, it := range append(items, item{key: "missing"}) {
		if err := compareReplies(ctx, oracle, store, "get "+it.key+"\r\n"); err != nil {
			return err
		}
	}
	return nil
}

// compareReplies sends req to memcached and to the program and wants the
// same reply from both.
func compareReplies(ctx context.Context, oracle, store *memcache.Client, req string) error {
	want, err := oracle.Do(ctx, []byte(req))
	if err != nil {
		return fmt.Errorf("memcached: %w", err)
	}
	got, err := store.Do(ctx, []byte(req))
	if err != nil {
		return fmt.Errorf("no reply to %q from the program over the veth pair: %v", short(req), err)
	}
	if string(got) != string(want) {
		return fmt.Errorf("to %q the program answered\n  %q\nand memcached\n  %q", short(req), got, want)
	}
	return nil
}
