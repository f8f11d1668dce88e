package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share: sendmmsg and
// recvmmsg on Linux, one datagram per call elsewhere.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// maxBatch bounds the datagrams per sendmmsg/recvmmsg.
const maxBatch = 64

// udpConn is one UDP socket and its closed loop. Requests are indexed by
// their 16-bit request id; ids run round, so a reply can be matched to a
// later request only if it arrives 65,536 requests late on the same socket.
type udpConn struct {
	nc    net.Conn
	bc    batchConn
	slots []slot
	fifo  []sent // send order, for timeouts; entries go stale when answered
	head  int
	next  uint16
	infl  int

	wmsgs []ipv4.Message
	wbufs [][]byte
	wids  []uint16
	rmsgs []ipv4.Message

	rd readDeadline
	tally

	// raw is the pinned client's I/O (nil for the netpoll client's).
	raw *rawIO
}

// slot is one request: in flight, or the next to send.
type slot struct {
	active bool
	get    bool
	nkeys  int
	key    int     // the key stored (preload, to retry it) or asked for (a GET)
	keys   []int32 // a multi-key GET's keys, in order
	try    int
	sent   time.Duration
	buf    []byte // reply collected so far, when it spans datagrams
}

type sent struct {
	id uint16
	at time.Duration
}

type stats struct {
	requests, gets, sets, hits, misses, errors, lost, late uint64
}

func (s *stats) addTo(r *Result) {
	r.Requests += s.requests
	r.Gets += s.gets
	r.Sets += s.sets
	r.Hits += s.hits
	r.Misses += s.misses
	r.Errors += s.errors
	r.Lost += s.lost
	r.Late += s.late
}

// tally is what a socket counted in the measured time.
type tally struct {
	st   stats
	hist Histogram
}

func (t *tally) counts() *tally { return t }

func newUDPConn(nc net.Conn) (*udpConn, error) {
	pc, ok := nc.(net.PacketConn)
	if !ok {
		return nil, fmt.Errorf("bench: dial returned %T, not a UDP socket", nc)
	}
	if u, ok := nc.(*net.UDPConn); ok {
		// Replies to a batch arrive as a burst; the kernel caps this at
		// net.core.rmem_max.
		u.SetReadBuffer(4 << 20)
	}
	c := &udpConn{nc: nc, slots: make([]slot, 1<<16)}
	if a, ok := nc.RemoteAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		c.bc = ipv6.NewPacketConn(pc)
	} else {
		c.bc = ipv4.NewPacketConn(pc)
	}
	c.wmsgs = make([]ipv4.Message, maxBatch)
	c.wbufs = make([][]byte, maxBatch)
	c.wids = make([]uint16, maxBatch)
	c.rmsgs = make([]ipv4.Message, maxBatch)
	for i := range c.rmsgs {
		c.wbufs[i] = make([]byte, 0, memcache.MaxDatagram)
		c.wmsgs[i].Buffers = [][]byte{nil}
		c.rmsgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	return c, nil
}

func (c *udpConn) close() { c.nc.Close() }

// readDeadline wakes a loop's blocking read every tick (a fraction of the
// timeout), so it can expire requests and stop on time; it moves the
// socket's deadline only when half a tick is gone, not on every read.
type readDeadline struct {
	at, tick time.Duration // relative to the loop's base
}

func (d *readDeadline) start(timeout time.Duration) {
	d.tick = min(max(timeout/4, time.Millisecond), 10*time.Millisecond)
}

func (d *readDeadline) arm(nc net.Conn, base time.Time, now time.Duration) {
	if now+d.tick/2 > d.at {
		d.at = now + d.tick
		nc.SetReadDeadline(base.Add(d.at))
	}
}

// socket is one client socket's closed loop, over UDP or TCP.
type socket interface {
	// loop keeps up to inFlight requests outstanding until stop
	// (relative to base), ctx ends, or src is done with nothing in flight.
	loop(ctx context.Context, src source, base time.Time, stop time.Duration, inFlight int, timeout time.Duration) error
	// forget drops what is still in flight (after a preload cut short).
	forget()
	counts() *tally
	close()
}

// source says what a loop sends and what it does with the outcome.
type source interface {
	// fill appends the request for s to b (which holds the frame header
	// on UDP) and sets s's fields; false when there is nothing to send now.
	fill(s *slot, b []byte) ([]byte, bool)
	reply(t *tally, s *slot, r []byte, now time.Duration)
	lost(t *tally, s *slot, now time.Duration)
	// late takes a reply to a request already counted lost.
	late(t *tally, now time.Duration)
	done() bool
}

func (c *udpConn) loop(ctx context.Context, src source, base time.Time, stop time.Duration, inFlight int, timeout time.Duration) error {
	c.rd.start(timeout)
	for ctx.Err() == nil {
		now := time.Since(base)
		if now >= stop || (src.done() && c.infl == 0) {
			return nil
		}
		c.expire(src, now, timeout)
		if err := c.send(src, now, inFlight); err != nil {
			return err
		}
		if c.infl == 0 {
			if src.done() {
				return nil
			}
			continue
		}
		c.rd.arm(c.nc, base, now)
		n, err := c.bc.ReadBatch(c.rmsgs, 0)
		now = time.Since(base)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			// ICMP port unreachable for an earlier datagram: those
			// requests time out as lost.
			c.st.errors++
			continue
		case errors.Is(err, net.ErrClosed):
			return nil
		default:
			return fmt.Errorf("bench: receive: %w", err)
		}
		for i := range n {
			m := &c.rmsgs[i]
			c.receive(src, m.Buffers[0][:m.N], now)
		}
	}
	return nil
}

// send tops the requests in flight up to inFlight, in batches.
func (c *udpConn) send(src source, now time.Duration, inFlight int) error {
	for c.infl < inFlight {
		k := 0
		for c.infl+k < inFlight && k < maxBatch {
			id := c.next
			s := &c.slots[id]
			if s.active {
				// Unanswered for 65,536 requests: lost, and its id is due.
				s.active = false
				c.infl--
				src.lost(&c.tally, s, now)
			}
			if c.raw != nil {
				c.wbufs[k] = c.raw.slot(c, k)
			}
			b := memcache.AppendHeader(c.wbufs[k][:0], memcache.Header{RequestID: id, Total: 1})
			b, ok := src.fill(s, b)
			if !ok {
				break
			}
			c.next++
			c.wbufs[k] = b
			c.wmsgs[k].Buffers[0] = b
			c.wids[k] = id
			k++
		}
		if k == 0 {
			return nil
		}
		if c.raw != nil {
			if err := c.raw.write(c, k); err != nil {
				return err
			}
		} else {
			sentN := 0
			for sentN < k {
				n, err := c.bc.WriteBatch(c.wmsgs[sentN:k], 0)
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						c.st.errors++ // an earlier datagram was refused
						continue
					}
					if errors.Is(err, net.ErrClosed) {
						return nil
					}
					return fmt.Errorf("bench: send: %w", err)
				}
				sentN += n
			}
		}
		for _, id := range c.wids[:k] {
			s := &c.slots[id]
			s.active, s.sent, s.buf = true, now, s.buf[:0]
			c.fifo = append(c.fifo, sent{id, now})
		}
		c.infl += k
	}
	return nil
}

// expire declares requests older than timeout lost.
func (c *udpConn) expire(src source, now, timeout time.Duration) {
	for c.head < len(c.fifo) {
		e := c.fifo[c.head]
		s := &c.slots[e.id]
		if s.active && s.sent == e.at {
			if now-e.at < timeout {
				break
			}
			s.active = false
			c.infl--
			src.lost(&c.tally, s, now)
		}
		c.head++
	}
	// Compact once the consumed part dominates, so memory stays bounded.
	if c.head > 4096 && c.head*2 > len(c.fifo) {
		c.fifo = c.fifo[:copy(c.fifo, c.fifo[c.head:])]
		c.head = 0
	}
}

// receive takes one datagram; a reply is complete when memcache.ReplyLen
// says so, over all the datagrams of its request id in arrival order
// (replies of several datagrams are assumed not to be reordered, as on
// loopback and veth).
func (c *udpConn) receive(src source, d []byte, now time.Duration) {
	if len(d) < memcache.HeaderLen {
		return
	}
	s := &c.slots[binary.BigEndian.Uint16(d)]
	if !s.active {
		src.late(&c.tally, now) // after it was declared lost
		return
	}
	total := binary.BigEndian.Uint16(d[4:])
	p := d[memcache.HeaderLen:]
	cmd := memcache.CmdSet
	if s.get {
		cmd = memcache.CmdGet
	}
	var r []byte
	if len(s.buf) == 0 && total == 1 {
		if n, ok := memcache.ReplyLen(cmd, p); ok {
			r = p[:n]
		} else {
			s.buf = append(s.buf, p...)
		}
	} else {
		s.buf = append(s.buf, p...)
		if n, ok := memcache.ReplyLen(cmd, s.buf); ok {
			r = s.buf[:n]
		}
	}
	if r == nil {
		return
	}
	s.active = false
	c.infl--
	src.reply(&c.tally, s, r, now)
}

func (c *udpConn) forget() {
	c.rd.at = 0
	for i := range c.slots {
		c.slots[i].active = false
	}
	c.infl, c.fifo, c.head = 0, c.fifo[:0], 0
}

// checkGet checks a GET reply byte for byte: VALUE blocks, each for a key
// asked for (in the order asked, as servers answer), flags 0 and exactly
// the workload's value, then END and nothing after. It returns the hits and
// whether the reply was right.
func checkGet(r []byte, keys *keySet, asked func(j int) int, nasked int, value []byte) (hits int, ok bool) {
	j := 0
	for len(r) > 0 {
		eol := bytes.IndexByte(r, '\n')
		if eol < 0 {
			return hits, false
		}
		line := bytes.TrimSuffix(r[:eol], []byte("\r"))
		if bytes.Equal(line, []byte("END")) {
			return hits, eol+1 == len(r)
		}
		v, err := memcache.ParseValueLine(line)
		end := eol + 1 + v.Bytes
		if err != nil || len(r) < end+2 || r[end] != '\r' || r[end+1] != '\n' {
			return hits, false
		}
		for j < nasked && !bytes.Equal(keys.key(asked(j)), v.Key) {
			j++
		}
		if j == nasked || v.Flags != 0 || !bytes.Equal(r[eol+1:end], value) {
			return hits, false
		}
		j++
		hits++
		r = r[end+2:]
	}
	return hits, false
}

var stored = []byte("STORED\r\n")

// workload is the measured run's source: random keys, GET/SET mix.
type workload struct {
	w       *Workload
	keys    *keySet
	rng     *rand.Rand
	setTail []byte // " 0 0 N\r\nVALUE\r\n"
	value   []byte // what every hit returns
	measure time.Duration
	end     time.Duration
}

type phases struct {
	base         time.Time
	measure, end time.Duration
}

// Value is the value of n bytes every SET of the benchmark stores (with
// flags 0), and so what every GET hit returns.
func Value(n int) []byte {
	v := make([]byte, n)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	return v
}

func newWorkload(w *Workload, keys *keySet, seed uint64) *workload {
	tail := []byte(" 0 0 " + strconv.Itoa(w.ValueSize) + "\r\n")
	tail = append(tail, Value(w.ValueSize)...)
	tail = append(tail, "\r\n"...)
	return &workload{w: w, keys: keys, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), setTail: tail, value: Value(w.ValueSize)}
}

func (l *workload) fill(s *slot, b []byte) ([]byte, bool) {
	s.get = l.w.GetRatio >= 1 || (l.w.GetRatio > 0 && l.rng.Float64() < l.w.GetRatio)
	if s.get {
		s.nkeys = l.w.MultiGet
		b = append(b, "get"...)
		s.keys = s.keys[:0]
		for range l.w.MultiGet {
			k := l.rng.IntN(l.w.Keys)
			b = append(b, ' ')
			b = append(b, l.keys.key(k)...)
			if l.w.MultiGet > 1 {
				s.keys = append(s.keys, int32(k))
			}
			s.key = k
		}
		return append(b, "\r\n"...), true
	}
	b = append(b, "set "...)
	b = append(b, l.keys.key(l.rng.IntN(l.w.Keys))...)
	return append(b, l.setTail...), true
}

func (l *workload) in(now time.Duration) bool { return now >= l.measure && now < l.end }

func (l *workload) reply(t *tally, s *slot, r []byte, now time.Duration) {
	if !l.in(now) {
		return
	}
	st := &t.st
	st.requests++
	t.hist.Record(now - s.sent)
	if !s.get {
		st.sets++
		if !bytes.Equal(r, stored) {
			st.errors++
		}
		return
	}
	st.gets++
	asked := func(int) int { return s.key }
	if s.nkeys > 1 {
		asked = func(j int) int { return int(s.keys[j]) }
	}
	n, ok := checkGet(r, l.keys, asked, s.nkeys, l.value)
	if !ok {
		st.errors++
	}
	st.hits += uint64(n)
	st.misses += uint64(max(0, s.nkeys-n))
}

func (l *workload) lost(t *tally, s *slot, now time.Duration) {
	if l.in(now) {
		t.st.lost++
	}
}

func (l *workload) late(t *tally, now time.Duration) {
	if l.in(now) {
		t.st.late++
	}
}

func (l *workload) done() bool { return false }

func run(ctx context.Context, c socket, w *Workload, keys *keySet, ph phases, seed uint64) error {
	l := newWorkload(w, keys, seed)
	l.measure, l.end = ph.measure, ph.end
	return c.loop(ctx, l, ph.base, ph.end, w.InFlight, w.Timeout)
}

// loader is the preload's source: each key once, lost ones retried twice.
type loader struct {
	*workload
	todo     []int // keys, tried tries[i] times before
	tries    []int
	failed   int
	answered int
	lostN    int
}

// dead: nothing answered while a few windows' worth of requests were lost,
// so nobody serves there; give up rather than wait out every retry.
func (l *loader) dead() bool { return l.answered == 0 && l.lostN >= 2*l.w.InFlight }

func (l *loader) fill(s *slot, b []byte) ([]byte, bool) {
	if len(l.todo) == 0 || l.dead() {
		return b, false
	}
	k, t := l.todo[len(l.todo)-1], l.tries[len(l.tries)-1]
	l.todo, l.tries = l.todo[:len(l.todo)-1], l.tries[:len(l.tries)-1]
	s.get, s.key, s.try = false, k, t
	b = append(b, "set "...)
	b = append(b, l.keys.key(k)...)
	return append(b, l.setTail...), true
}

func (l *loader) reply(t *tally, s *slot, r []byte, now time.Duration) {
	l.answered++
	if !bytes.Equal(r, stored) {
		l.failed++ // the server said no; asking again would not help
	}
}

func (l *loader) lost(t *tally, s *slot, now time.Duration) {
	l.lostN++
	if s.try < 2 && !l.dead() {
		l.todo, l.tries = append(l.todo, s.key), append(l.tries, s.try+1)
		return
	}
	l.failed++
}

func (l *loader) late(t *tally, now time.Duration) {}

func (l *loader) done() bool { return len(l.todo) == 0 || l.dead() }

func preloadOn(ctx context.Context, c socket, w *Workload, keys *keySet, todo []int) (int, error) {
	l := &loader{workload: newWorkload(w, keys, 0), todo: todo, tries: make([]int, len(todo))}
	// Bounded by count (every key at most three times); the time bound
	// only guards against a server that stalls without dropping.
	err := c.loop(ctx, l, time.Now(), time.Hour, w.InFlight, w.Timeout)
	c.forget() // what is still in flight (only when ctx ended)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return l.failed + len(l.todo), err
}
