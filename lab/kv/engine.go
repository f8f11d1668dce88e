package kv

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
)

// relTimeMax is memcached's REALTIME_MAXDELTA: exptimes up to 30 days are
// relative, larger ones absolute unix times. XDP applies the same limit
// (RELTIME_MAX in bpf/include/kv.h, whence this value).
const relTimeMax = int32(kvKvLimitKV_LIMIT_RELTIME_MAX)

// maxItemSize is memcached's default item limit (-I 1m), in its own
// accounting (memcache.ItemSize): bigger items get "SERVER_ERROR object too
// large for cache".
const maxItemSize = 1 << 20

// item is one stored value as the slow path sees it.
type item struct {
	cas     uint64
	exptime uint64 // absolute unix seconds, 0 never
	flags   uint32
	data    []byte
}

// engine executes memcached requests with memcached 1.6's semantics on the
// items XDP serves: everything XDP passes up and every TCP request. Items
// that fit the in-kernel slot live in the BPF map (read and written through
// the control program, so under XDP's locks); larger ones live in big, and
// the map holds a marker that makes XDP pass their requests up.
type engine struct {
	o *Objects

	mu       sync.Mutex
	big      map[string]*list.Element // of lru
	lru      list.List                // *bigItem, most recently used first
	bigBytes int                      // keys and values in big, held to o.cfg.SlowMemory
	sweepQ   []string                 // keys of big the sweep has yet to check
	casSeq   uint64
	stats    kvKvStats // requests served here; XDP's own are per-CPU in the map
	evicted  uint64    // values evicted from big for its budget
	orphans  uint64    // values dropped from big because their marker was gone or expired
	now      func() time.Time
}

type bigItem struct {
	key string
	it  item
}

func newEngine(o *Objects) *engine {
	return &engine{o: o, big: map[string]*list.Element{}, now: time.Now}
}

func bigSize(key string, it item) int { return len(key) + len(it.data) }

// hold keeps it as key's value in big, most recently used, and evicts the
// least recently used values (and their markers) past the budget.
func (g *engine) hold(key string, it item, now uint64) {
	g.drop(key)
	g.big[key] = g.lru.PushFront(&bigItem{key: key, it: it})
	g.bigBytes += bigSize(key, it)
	for g.bigBytes > g.o.cfg.SlowMemory && g.lru.Len() > 1 {
		old := g.lru.Back().Value.(*bigItem)
		// A marker left behind (the removal failed) is dropped by the
		// next request for it, as a marker without its value.
		g.o.remove([]byte(old.key), condCAS, old.it.cas, now)
		g.drop(old.key)
		g.evicted++
	}
}

// drop forgets key's value in big, if any.
func (g *engine) drop(key string) {
	if e, ok := g.big[key]; ok {
		g.bigBytes -= bigSize(key, e.Value.(*bigItem).it)
		g.lru.Remove(e)
		delete(g.big, key)
	}
}

func (g *engine) dropAll() {
	clear(g.big)
	g.lru.Init()
	g.bigBytes = 0
}

// sweepBatch is how many values of big each sweep checks: about a
// millisecond of control program runs under the lock.
const sweepBatch = 256

// sweep drops values of big that no request will reach: their marker was
// evicted by the kernel's LRU (and maybe replaced by XDP), or they expired
// unread. It checks sweepBatch of them per call, going round all of them.
func (g *engine) sweep() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.sweepQ) == 0 {
		for k := range g.big {
			g.sweepQ = append(g.sweepQ, k)
		}
	}
	now := uint64(g.now().Unix())
	n := min(sweepBatch, len(g.sweepQ))
	for _, k := range g.sweepQ[:n] {
		e, ok := g.big[k]
		if !ok {
			continue
		}
		b := e.Value.(*bigItem).it
		m, live, err := g.o.load([]byte(k), now)
		if err != nil {
			continue
		}
		mine := live && m.slow && m.cas == b.cas
		if mine && !expired(b.exptime, now) {
			continue
		}
		if mine {
			g.o.remove([]byte(k), condCAS, m.cas, now)
		}
		g.drop(k)
		g.orphans++
	}
	g.sweepQ = g.sweepQ[n:]
}

var errContended = errors.New("SERVER_ERROR key contended")

// maxRetries bounds the retries of a read-modify-write that raced with XDP.
const maxRetries = 64

func absExptime(e int32, now uint64) uint64 {
	switch {
	case e == 0:
		return 0
	case e < 0:
		return 1
	case e <= relTimeMax:
		return now + uint64(e)
	}
	return uint64(e)
}

func expired(exptime, now uint64) bool { return exptime != 0 && exptime <= now }

// get returns the key's live item.
func (g *engine) get(key []byte, now uint64) (item, bool, error) {
	e, ok, err := g.o.load(key, now)
	if err != nil {
		return item{}, false, err
	}
	if !ok || !e.slow {
		if _, held := g.big[string(key)]; held {
			g.drop(string(key)) // its marker is gone
			g.orphans++
		}
		if !ok {
			return item{}, false, nil
		}
		return item{cas: e.cas, exptime: e.exptime, flags: e.flags, data: e.data}, true, nil
	}
	el, ok := g.big[string(key)]
	var b item
	if ok {
		b = el.Value.(*bigItem).it
	}
	if !ok || b.cas != e.cas || expired(b.exptime, now) {
		// A marker without its value (or an expired one): drop both.
		if ok && expired(b.exptime, now) {
			g.stats.GetExpired++
		}
		g.drop(string(key))
		_, err := g.o.remove(key, condCAS, e.cas, now)
		return item{}, false, err
	}
	g.lru.MoveToFront(el)
	return b, true, nil
}

// put writes it under cond (condCAS compares with cas). Values too large
// for the kernel slot go to big behind a marker.
func (g *engine) put(key []byte, it item, cond kvKvCtlCond, cas uint64, now uint64) (bool, error) {
	if len(it.data) <= int(g.o.cfg.MaxValue) {
		ok, _, err := g.o.write(key, entry{cas: it.cas, exptime: it.exptime, flags: it.flags, data: it.data}, cond, cas, now)
		if ok {
			g.drop(string(key))
		}
		return ok, err
	}
	if it.cas == 0 {
		g.casSeq++
		it.cas = g.casSeq<<10 | 2<<8 // the slow path's own cas space
	}
	ok, _, err := g.o.write(key, entry{cas: it.cas, slow: true}, cond, cas, now)
	if ok {
		it.data = bytes.Clone(it.data)
		g.hold(string(key), it, now)
	}
	return ok, err
}

// exec runs one parsed request and returns memcached's reply (nil when
// noreply silences it).
func (g *engine) exec(req *memcache.Request) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := uint64(g.now().Unix())
	reply, err := g.execLocked(req, now)
	if err != nil {
		return errReply(err)
	}
	if req.NoReply {
		return nil
	}
	return reply
}

func errReply(err error) []byte {
	if errors.Is(err, errContended) {
		return []byte(err.Error() + "\r\n")
	}
	return []byte("SERVER_ERROR " + err.Error() + "\r\n")
}

// getViaXDP answers a get or gets as XDP would, if XDP answers it: all its
// keys are in the kernel and the reply fits a datagram.
func (g *engine) getViaXDP(req *memcache.Request) ([]byte, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	reply, ok, err := g.viaXDP(req)
	return reply, ok && err == nil
}

// appendValues appends the VALUE blocks of keys to out until out holds max
// bytes, and says how many keys it answered: a multi-get is built a slice
// at a time, to be sent as it goes.
func (g *engine) appendValues(out []byte, keys [][]byte, withCAS bool, max int) ([]byte, int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.appendValuesLocked(out, keys, withCAS, uint64(g.now().Unix()), max)
}

func (g *engine) execLocked(req *memcache.Request, now uint64) ([]byte, error) {
	// What XDP can finish it finishes here too, atomically under its own
	// locks; only what it passes up needs the compare-and-swap loops below.
	if reply, ok, err := g.viaXDP(req); err != nil || ok {
		return reply, err
	}
	switch req.Command {
	case memcache.CmdGet, memcache.CmdGets:
		return g.getMulti(req, now)
	case memcache.CmdSet, memcache.CmdAdd, memcache.CmdReplace, memcache.CmdAppend, memcache.CmdPrepend, memcache.CmdCAS:
		g.stats.CmdSet++
		return g.store(req, now)
	case memcache.CmdDelete:
		return g.delete(req.Key, now)
	case memcache.CmdIncr, memcache.CmdDecr:
		return g.arith(req, now)
	case memcache.CmdTouch:
		g.stats.CmdTouch++
		return g.touch(req, now)
	}
	return []byte("ERROR\r\n"), nil
}

// slowSrc and slowDst address the frames the slow path runs through XDP;
// they never reach a network.
var (
	slowSrc = netip.MustParseAddr("198.18.255.1")
	slowDst = netip.MustParseAddr("198.18.255.2")
)

// slowSrcPort is the source port of those frames: one XDP does not refuse
// as a reflection risk (below 1024, 11211, the store's own port).
func slowSrcPort(own uint16) uint16 {
	if own == 1024 {
		return 1025
	}
	return 1024
}

// viaXDP runs a request through the XDP program with BPF_PROG_TEST_RUN,
// marked with the slow path's token. ok is false when XDP passed it up.
func (g *engine) viaXDP(req *memcache.Request) (reply []byte, ok bool, err error) {
	switch req.Command {
	case memcache.CmdGet, memcache.CmdGets, memcache.CmdSet, memcache.CmdAdd, memcache.CmdReplace,
		memcache.CmdAppend, memcache.CmdPrepend, memcache.CmdCAS, memcache.CmdDelete,
		memcache.CmdIncr, memcache.CmdDecr, memcache.CmdTouch:
	default:
		return nil, false, nil
	}
	raw := memcache.AppendRequest(nil, *req)
	if len(raw) > payloadMax {
		return nil, false, nil
	}
	in := frame.Datagram{Src: netip.AddrPortFrom(slowSrc, slowSrcPort(g.o.cfg.Port)), Dst: netip.AddrPortFrom(slowDst, g.o.cfg.Port), Reserved: g.o.token, Payload: raw}.Frame()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+payloadMax)}
	act, err := g.o.objs.KvXdp.Run(&opts)
	switch {
	case err != nil:
		return nil, false, err
	case act != xdpTX && act != xdpDrop:
		return nil, false, nil
	}
	if req.Command.IsStorage() {
		// XDP passes every request for a key whose value is held here, so
		// any value held here for this key was stale.
		g.drop(string(req.Key))
	}
	if act == xdpDrop {
		return nil, true, nil
	}
	d, err := frame.Parse(opts.DataOut)
	if err != nil {
		return nil, false, fmt.Errorf("XDP reply: %w", err)
	}
	return d.Payload, true, nil
}

func (g *engine) getMulti(req *memcache.Request, now uint64) ([]byte, error) {
	out, _, err := g.appendValuesLocked(nil, req.Keys, req.Command == memcache.CmdGets, now, math.MaxInt)
	if err != nil {
		return nil, err
	}
	return append(out, "END\r\n"...), nil
}

func (g *engine) appendValuesLocked(out []byte, keys [][]byte, withCAS bool, now uint64, max int) ([]byte, int, error) {
	for i, k := range keys {
		if len(out) >= max {
			return out, i, nil
		}
		g.stats.CmdGet++
		it, ok, err := g.get(k, now)
		if err != nil {
			return out, i, err
		}
		if !ok {
			g.stats.GetMisses++
			continue
		}
		g.stats.GetHits++
		out = appendValue(out, k, it, withCAS)
	}
	return out, len(keys), nil
}

func appendValue(out, key []byte, it item, withCAS bool) []byte {
	out = append(out, "VALUE "...)
	out = append(out, key...)
	out = append(out, ' ')
	out = strconv.AppendUint(out, uint64(it.flags), 10)
	out = append(out, ' ')
	out = strconv.AppendInt(out, int64(len(it.data)), 10)
	if withCAS {
		out = append(out, ' ')
		out = strconv.AppendUint(out, it.cas, 10)
	}
	out = append(out, "\r\n"...)
	out = append(out, it.data...)
	return append(out, "\r\n"...)
}

var (
	replyStored    = []byte("STORED\r\n")
	replyNotStored = []byte("NOT_STORED\r\n")
	replyExists    = []byte("EXISTS\r\n")
	replyNotFound  = []byte("NOT_FOUND\r\n")
	replyDeleted   = []byte("DELETED\r\n")
	replyTouched   = []byte("TOUCHED\r\n")
)

// store runs set/add/replace/append/prepend/cas as a compare-and-swap loop
// against whatever XDP does to the same key meanwhile.
func (g *engine) store(req *memcache.Request, now uint64) ([]byte, error) {
	for range maxRetries {
		cur, live, err := g.get(req.Key, now)
		if err != nil {
			return nil, err
		}
		next := item{exptime: absExptime(req.Exptime, now), flags: req.Flags, data: req.Value}
		cond, cas := condAbsent, uint64(0)
		if live {
			cond, cas = condCAS, cur.cas
		}
		switch req.Command {
		case memcache.CmdSet:
			cond = condAny
		case memcache.CmdAdd:
			if live {
				return replyNotStored, nil
			}
		case memcache.CmdReplace:
			if !live {
				return replyNotStored, nil
			}
		case memcache.CmdAppend, memcache.CmdPrepend:
			if !live {
				return replyNotStored, nil
			}
			next.flags, next.exptime = cur.flags, cur.exptime
			if req.Command == memcache.CmdAppend {
				next.data = append(bytes.Clone(cur.data), req.Value...)
			} else {
				next.data = append(bytes.Clone(req.Value), cur.data...)
			}
		case memcache.CmdCAS:
			if !live {
				g.stats.CasMisses++
				return replyNotFound, nil
			}
			if cur.cas != req.CAS {
				g.stats.CasBadval++
				return replyExists, nil
			}
		}
		ok, err := g.put(req.Key, next, cond, cas, now)
		if err != nil {
			return nil, err
		}
		if ok {
			if req.Command == memcache.CmdCAS {
				g.stats.CasHits++
			}
			g.stats.TotalItems++
			return replyStored, nil
		}
	}
	return nil, errContended
}

func (g *engine) delete(key []byte, now uint64) ([]byte, error) {
	for range maxRetries {
		cur, live, err := g.get(key, now)
		if err != nil {
			return nil, err
		}
		if !live {
			g.stats.DeleteMisses++
			return replyNotFound, nil
		}
		ok, err := g.o.remove(key, condCAS, cur.cas, now)
		if err != nil {
			return nil, err
		}
		if ok {
			g.drop(string(key))
			g.stats.DeleteHits++
			return replyDeleted, nil
		}
	}
	return nil, errContended
}

func (g *engine) touch(req *memcache.Request, now uint64) ([]byte, error) {
	for range maxRetries {
		cur, live, err := g.get(req.Key, now)
		if err != nil {
			return nil, err
		}
		if !live {
			g.stats.TouchMisses++
			return replyNotFound, nil
		}
		cur.exptime = absExptime(req.Exptime, now)
		ok, err := g.put(req.Key, cur, condCAS, cur.cas, now) // keeps cur.cas, as memcached does
		if err != nil {
			return nil, err
		}
		if ok {
			g.stats.TouchHits++
			return replyTouched, nil
		}
	}
	return nil, errContended
}

var replyNonNumeric = []byte("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")

// arith is memcached's do_add_delta: 64-bit wrap on incr, floor at zero on
// decr, and a result no longer than the old value written over it padded
// with spaces.
func (g *engine) arith(req *memcache.Request, now uint64) ([]byte, error) {
	incr := req.Command == memcache.CmdIncr
	for range maxRetries {
		cur, live, err := g.get(req.Key, now)
		if err != nil {
			return nil, err
		}
		if !live {
			if incr {
				g.stats.IncrMisses++
			} else {
				g.stats.DecrMisses++
			}
			return replyNotFound, nil
		}
		v, ok := strtoull(cur.data)
		if len(cur.data) == 0 || !ok {
			return replyNonNumeric, nil
		}
		if incr {
			v += req.Delta
		} else if req.Delta > v {
			v = 0
		} else {
			v -= req.Delta
		}
		digits := strconv.AppendUint(nil, v, 10)
		next := cur
		next.cas = 0
		if len(digits) <= len(cur.data) {
			next.data = append(bytes.Clone(digits), bytes.Repeat([]byte{' '}, len(cur.data)-len(digits))...)
		} else {
			next.data = digits
		}
		ok, err = g.put(req.Key, next, condCAS, cur.cas, now)
		if err != nil {
			return nil, err
		}
		if ok {
			if incr {
				g.stats.IncrHits++
			} else {
				g.stats.DecrHits++
			}
			return append(digits, "\r\n"...), nil
		}
	}
	return nil, errContended
}

// strtoull is memcached's safe_strtoull on an item's data, which memcached
// keeps followed by "\r\n": C strtoull, then the rest must start with
// whitespace (or be the end). A result that is negative as an int64 is
// refused if strchr finds a '-' in the data: memcached scans up to a NUL,
// past the number ("9223372036854775808 -" is not a number). Beyond the
// item's "\r\n" it scans whatever memory follows, which cannot be modelled;
// this assumes no '-' there.
func strtoull(data []byte) (uint64, bool) {
	s := append(bytes.Clone(data), '\r', '\n')
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var v uint64
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		d := uint64(s[i] - '0')
		if v > (^uint64(0)-d)/10 {
			return 0, false // ERANGE
		}
		v = v*10 + d
		i++
	}
	if i == start {
		return 0, false // no conversion: endptr == str
	}
	if !(isSpace(s[i]) || s[i] == 0) {
		return 0, false
	}
	if neg {
		v = -v
	}
	if int64(v) < 0 {
		str := data
		if nul := bytes.IndexByte(str, 0); nul >= 0 {
			str = str[:nul]
		}
		if bytes.IndexByte(str, '-') >= 0 {
			return 0, false
		}
	}
	return v, true
}

func isSpace(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }
