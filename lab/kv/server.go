package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/go-multierror"
	"github.com/xdplab/xdplab/lab/memcache"
)

// Version is what `version` answers: memcached's format, naming the store.
const Version = "1.6.18-xdplab"

// Server is the slow path: it answers what XDP passes up on the UDP port
// and serves the same protocol on TCP, on the same items.
type Server struct {
	o      *Objects
	g      *engine
	parser memcache.Parser
	start  time.Time

	udp   net.PacketConn
	tcp   net.Listener
	addrs *hostAddrs // the namespace's addresses XDP answers on, when not one
	wg    sync.WaitGroup

	mu       sync.Mutex
	open     map[net.Conn]bool // TCP connections, closed when Serve ends
	closed   bool
	flushAt  *time.Timer // the pending delayed flush_all, if any
	rejected uint64      // connections refused past cfg.MaxConns
	idleKick uint64      // connections closed after cfg.IdleTimeout
}

// NewServer wraps loaded objects. Listen binds its sockets.
func NewServer(o *Objects) *Server {
	return &Server{o: o, g: newEngine(o), parser: memcache.Parser{MaxItemSize: maxItemSize, MaxLine: maxLine}, start: time.Now()}
}

// Listen binds UDP and TCP on host:port in the calling thread's network
// namespace (call it inside the namespace the store serves).
func (s *Server) Listen(host string) error {
	addr := net.JoinHostPort(host, strconv.Itoa(int(s.o.cfg.Port)))
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("slow path TCP: %w", err)
	}
	s.tcp = tcp
	if !s.o.cfg.NoUDP {
		if s.udp, err = net.ListenPacket("udp", addr); err != nil {
			tcp.Close()
			return fmt.Errorf("slow path UDP: %w", err)
		}
	}
	// XDP answers where the slow path listens: the one address asked
	// for, or every address of this namespace, followed as they change.
	if ip, perr := netip.ParseAddr(host); perr == nil && !ip.IsUnspecified() {
		err = s.o.SetAddrs([]netip.Addr{ip})
	} else if s.addrs, err = currentHostAddrs(); err == nil {
		err = s.syncAddrs()
	}
	if err != nil {
		s.closeSockets()
		return err
	}
	return nil
}

func (s *Server) syncAddrs() error {
	as, err := s.addrs.list()
	if err != nil {
		return err
	}
	return s.o.SetAddrs(as)
}

func (s *Server) closeSockets() error {
	err := multierror.Append(nil, s.tcp.Close())
	if s.udp != nil {
		err = multierror.Append(err, s.udp.Close())
	}
	if s.addrs != nil {
		s.addrs.close()
	}
	return err.ErrorOrNil()
}

// Addrs are the bound UDP (nil with NoUDP) and TCP addresses.
func (s *Server) Addrs() (udp, tcp net.Addr) {
	if s.udp != nil {
		udp = s.udp.LocalAddr()
	}
	return udp, s.tcp.Addr()
}

// Serve runs until ctx ends, then closes the sockets and waits for its
// goroutines.
func (s *Server) Serve(ctx context.Context) error {
	if s.tcp == nil {
		return errors.New("serve: Listen first")
	}
	s.wg.Add(2)
	if s.udp != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.serveUDP() }()
	}
	go func() { defer s.wg.Done(); s.serveTCP() }()
	go func() { defer s.wg.Done(); s.tick(ctx) }()
	<-ctx.Done()
	err := s.closeSockets()
	// Idle clients must not hold the store up: their reads end with
	// their connections, and a delayed flush_all dies with the store.
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		c.Close()
	}
	if s.flushAt != nil {
		s.flushAt.Stop()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// track adds c to the connections Serve closes when it ends. It refuses
// c, as memcached does, when cfg.MaxConns are open, and says so; false
// also when Serve has ended.
func (s *Server) track(c net.Conn) (ok, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, false
	}
	if len(s.open) >= s.o.cfg.MaxConns {
		s.rejected++
		return false, true
	}
	if s.open == nil {
		s.open = map[net.Conn]bool{}
	}
	s.open[c] = true
	return true, false
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
}

// conns is how many TCP connections are being served.
func (s *Server) conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// tick keeps the program's clock offset current (NTP may slew the wall
// clock), follows the namespace's addresses and sweeps the slow path's
// values for orphans.
func (s *Server) tick(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.o.SyncClock()
			if s.addrs != nil {
				s.syncAddrs() // a failure keeps the last set, which XDP serves
			}
			s.g.sweep()
		}
	}
}

func (s *Server) serveUDP() {
	buf := make([]byte, 65536)
	sock := newReplySocket(s.udp)
	for {
		n, from, to, err := sock.read(buf)
		if err != nil {
			return
		}
		h, err := memcache.ParseHeader(buf[:n])
		// memcached ignores datagrams without a frame header and requests
		// spanning several datagrams; it does not look at seq.
		if err != nil || h.Total != 1 {
			continue
		}
		if s.refuse(from, buf[memcache.HeaderLen:n]) {
			continue
		}
		out, over := s.execStream(buf[memcache.HeaderLen:n], s.udpLimit(n-memcache.HeaderLen))
		if over {
			s.g.mu.Lock()
			s.g.stats.UdpTooLarge++
			s.g.mu.Unlock()
			out = replyTooLargeForUDP
		}
		if len(out) == 0 {
			continue
		}
		for _, d := range memcache.AppendDatagrams(nil, h.RequestID, out) {
			sock.write(d, from, to)
		}
	}
}

var replyTooLargeForUDP = []byte("SERVER_ERROR reply too large for UDP, use TCP\r\n")

// udpLimit is the largest reply to a UDP request of req bytes (Config).
func (s *Server) udpLimit(req int) int {
	c := s.o.cfg
	limit := math.MaxInt
	if c.UDPReplyMax != Unlimited {
		limit = c.UDPReplyMax
	}
	if c.UDPAmplification > 0 {
		limit = min(limit, c.UDPAmplification*req)
	}
	return limit
}

// refuse says whether a datagram passed up must go unanswered, as XDP
// would have dropped it (memcache.Unanswerable), and counts it.
func (s *Server) refuse(from net.Addr, payload []byte) bool {
	ua, ok := from.(*net.UDPAddr)
	if !ok || !memcache.Unanswerable(uint16(ua.Port), s.o.cfg.Port, payload) {
		return false
	}
	s.g.mu.Lock()
	s.g.stats.ReflectDrop++
	s.g.mu.Unlock()
	return true
}

func (s *Server) serveTCP() {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		ok, full := s.track(c)
		if full {
			// memcached's answer; a new socket's buffer takes it at once.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write([]byte("ERROR Too many open connections\r\n"))
			c.Close()
			continue
		}
		if !ok {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

// A TCP connection's flow, after memcached's.
const (
	// readSize is memcached's READ_BUFFER_SIZE: it reads up to this much
	// past the start of a partial request, so a line it closes on (2048
	// bytes without '\n') is one seen so within such a read.
	readSize = 16 << 10
	// reqsPerEvent is memcached's -R: it sends its queued replies after
	// that many requests of one read (after one more in the first batch).
	reqsPerEvent = 20
	// queueMax is how many reply bytes may queue before those memcached
	// has sent are written: a flood of gets queues about this plus a value.
	queueMax = 256 << 10
	// maxLine bounds get lines, which memcached buffers whatever their
	// length: at the largest data block, input stays within about an item.
	maxLine = maxItemSize
)

// replies queues a connection's replies. Those before sent are ones
// memcached has sent; the rest can still be thrown away (a get with an
// over-long key drops them).
type replies struct {
	c    net.Conn
	out  []byte
	sent int
	err  error
}

func (q *replies) add(b []byte) { q.out = append(q.out, b...) }

// commit counts the queue as sent, as memcached sends it here, and writes
// it once it is large.
func (q *replies) commit() {
	q.sent = len(q.out)
	if q.sent >= queueMax {
		q.flush()
	}
}

// drop throws away the replies memcached would not have sent yet.
func (q *replies) drop() { q.out = q.out[:q.sent] }

func (q *replies) flush() error {
	if q.err == nil && len(q.out) > 0 {
		_, q.err = q.c.Write(q.out)
	}
	q.out, q.sent = q.out[:0], 0
	if cap(q.out) > 2*queueMax {
		q.out = nil // the queue of a large reply
	}
	return q.err
}

// input is what a connection has read and not worked through: buf, at the
// start of mem.
type input struct{ buf, mem []byte }

// fill reads as memcached does: up to readSize bytes from the start of a
// partial request, more only for one longer than that.
func (in *input) fill(c net.Conn) error {
	n := len(in.buf)
	need := readSize
	if n >= readSize {
		need = n + readSize
	}
	switch {
	case cap(in.mem) < need:
		in.mem = make([]byte, max(need, 2*cap(in.mem)))
	case cap(in.mem) > 4*readSize && need == readSize:
		in.mem = make([]byte, readSize) // done with a large request
	}
	in.mem = in.mem[:cap(in.mem)]
	copy(in.mem, in.buf)
	k, err := c.Read(in.mem[n:need])
	in.buf = in.mem[:n+k]
	return err
}

// serveConn reads requests as they stream in and answers in order, sending
// replies when memcached sends them (so that a request that throws away
// replies not yet sent throws away the same ones): after each get or gets,
// every reqsPerEvent requests, when it needs more input and when it quits.
func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	q := replies{c: c}
	var in input
	left := reqsPerEvent
	for q.err == nil {
		req, n, err := s.parser.Parse(in.buf)
		var me *memcache.Error
		switch {
		case errors.Is(err, memcache.ErrIncomplete):
			if q.flush() != nil {
				return
			}
			if idle := s.o.cfg.IdleTimeout; idle > 0 {
				// memcached times from the last complete request line.
				c.SetReadDeadline(time.Now().Add(idle))
			}
			if err := in.fill(c); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					s.mu.Lock()
					s.idleKick++
					s.mu.Unlock()
				}
				return
			}
			left = reqsPerEvent
			continue
		case err == nil && req.Command == memcache.CmdQuit:
			q.flush()
			return
		case err == nil && (req.Command == memcache.CmdGet || req.Command == memcache.CmdGets):
			// Its keys are valid, so it succeeds and everything before
			// it goes with its reply.
			q.commit()
			s.streamGet(&q, &req)
			q.commit()
		case err == nil:
			q.add(s.exec(&req))
		case errors.As(err, &me) && me.Close:
			q.drop()
			q.flush()
			return
		case errors.As(err, &me):
			if me.Swallow > 0 {
				// Discard the too-large data block as it arrives.
				rest := me.Swallow - min(me.Swallow, len(in.buf)-n)
				n += me.Swallow - rest
				if _, err := io.CopyN(io.Discard, c, int64(rest)); err != nil {
					return
				}
			}
			if me.DropPending {
				q.drop()
			}
			q.add(me.Reply())
		}
		in.buf = in.buf[n:]
		if left--; left < 0 {
			q.commit()
			left = reqsPerEvent - 1
		}
	}
}

// streamGet answers a get or gets a slice at a time, writing each as it
// goes, as memcached sends a multi-get from its items' memory.
func (s *Server) streamGet(q *replies, req *memcache.Request) {
	if reply, ok := s.g.getViaXDP(req); ok {
		q.add(reply)
		return
	}
	for keys := req.Keys; len(keys) > 0 && q.err == nil; {
		var n int
		var err error
		q.out, n, err = s.g.appendValues(q.out, keys, req.Command == memcache.CmdGets, queueMax)
		if err != nil {
			q.add(errReply(err))
			return
		}
		keys = keys[n:]
		q.commit()
	}
	q.add([]byte("END\r\n"))
}

// execStream runs every request in a datagram's payload and concatenates
// the replies, as memcached does for several commands in one datagram. Past
// limit bytes it keeps no more replies (the commands still run) and says
// so: a datagram of gets of a large item cannot build a reply of gigabytes
// that the UDP cap would refuse anyway.
func (s *Server) execStream(b []byte, limit int) (out []byte, over bool) {
	sent := 0 // as in serveConn
	for len(b) > 0 {
		req, n, err := s.parser.Parse(b)
		var me *memcache.Error
		switch {
		case errors.Is(err, memcache.ErrIncomplete):
			return out, over // the datagram ended inside a request: memcached waits in vain
		case errors.As(err, &me):
			if me.Close {
				return out, over
			}
			if me.DropPending {
				out = out[:sent]
			}
			out = append(out, me.Reply()...)
			n += me.Swallow
		case err != nil:
			return out, over
		case req.Command == memcache.CmdQuit:
			return out, over
		case req.Command == memcache.CmdGet || req.Command == memcache.CmdGets:
			if !over {
				out, over = s.getBounded(out, &req, limit)
			}
			sent = len(out)
		default:
			out = append(out, s.exec(&req)...)
		}
		if len(out) > limit {
			out, over = out[:sent], true
		}
		if n <= 0 || n > len(b) {
			return out, over
		}
		b = b[n:]
	}
	return out, over
}

// getBounded appends a get's reply to out, or, if that would take out past
// limit bytes, leaves out as it was and says so.
func (s *Server) getBounded(out []byte, req *memcache.Request, limit int) ([]byte, bool) {
	start := len(out)
	if reply, ok := s.g.getViaXDP(req); ok {
		out = append(out, reply...)
	} else {
		var n int
		var err error
		// appendValues stops once out holds its max: one byte more than
		// fits is over.
		out, n, err = s.g.appendValues(out, req.Keys, req.Command == memcache.CmdGets, max(limit, limit+1))
		switch {
		case err != nil:
			out = append(out[:start], errReply(err)...)
		case n < len(req.Keys):
			return out[:start], true
		default:
			out = append(out, "END\r\n"...)
		}
	}
	if len(out) > limit {
		return out[:start], true
	}
	return out, false
}

// exec answers one request: commands on keys go to the engine, the rest
// are the server's own.
func (s *Server) exec(req *memcache.Request) []byte {
	var out []byte
	switch req.Command {
	case memcache.CmdStats:
		if len(req.Args) > 0 {
			return []byte("ERROR\r\n") // only general-purpose stats
		}
		st, err := s.Stats()
		if err != nil {
			return []byte("SERVER_ERROR " + err.Error() + "\r\n")
		}
		for _, kv := range st {
			out = fmt.Appendf(out, "STAT %s %s\r\n", kv[0], kv[1])
		}
		return append(out, "END\r\n"...)
	case memcache.CmdVersion:
		return []byte("VERSION " + Version + "\r\n")
	case memcache.CmdVerbosity:
		if req.NoReply {
			return nil
		}
		return []byte("OK\r\n")
	case memcache.CmdFlushAll:
		if err := s.flushAll(flushDelay(req.Exptime, s.g.now())); err != nil {
			return []byte("SERVER_ERROR " + err.Error() + "\r\n")
		}
		if req.NoReply {
			return nil
		}
		return []byte("OK\r\n")
	}
	return s.g.exec(req)
}

// flushDelay reads flush_all's argument as memcached does (realtime()):
// up to 30 days it is seconds from now, past that a Unix time, and zero,
// a negative number or a time already past mean now.
func flushDelay(exptime int32, now time.Time) time.Duration {
	switch {
	case exptime <= 0:
		return 0
	case exptime > relTimeMax:
		return max(0, time.Unix(int64(exptime), 0).Sub(now))
	}
	return time.Duration(exptime) * time.Second
}

// flushAll flushes after delay. memcached keeps one flush time, so each
// flush_all replaces the one pending, even with a later time.
func (s *Server) flushAll(delay time.Duration) error {
	s.mu.Lock()
	if s.flushAt != nil {
		s.flushAt.Stop()
		s.flushAt = nil
	}
	if delay > 0 {
		s.flushAt = time.AfterFunc(delay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.closed {
				s.Flush()
			}
		})
	}
	s.mu.Unlock()
	if delay > 0 {
		return nil
	}
	return s.Flush()
}

// Flush invalidates every item, in the kernel and in the slow path.
func (s *Server) Flush() error {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	now := uint64(s.g.now().Unix())
	var keys [][]byte
	var h uint64
	val := make([]byte, s.o.vsize)
	it := s.o.objs.Kv.Iterate()
	for it.Next(&h, &val) {
		klen := int(val[valKlenOff]) | int(val[valKlenOff+1])<<8
		if klen > 0 && klen <= memcache.MaxKeyLen {
			keys = append(keys, append([]byte(nil), val[valKeyOff:valKeyOff+klen]...))
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	var errs *multierror.Error
	for _, k := range keys {
		if _, err := s.o.remove(k, condAny, 0, now); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	s.g.dropAll()
	return errs.ErrorOrNil()
}

// Offsets in struct kv_val, for reading map values without a full decode.
const (
	valKlenOff = int(unsafe.Offsetof(kvKvVal{}.Klen))
	valKeyOff  = int(unsafe.Offsetof(kvKvVal{}.Key))
)

// Stats returns memcached-style statistics, in memcached's order where the
// names are shared, then the store's own xdp_* counters.
func (s *Server) Stats() ([][2]string, error) {
	// XDP's counters are per CPU, in both scratch slots.
	var sum kvKvStats
	for slot := range uint32(2) {
		var per []kvScratch
		if err := s.o.objs.Scratch.Lookup(slot, &per); err != nil {
			return nil, err
		}
		for i := range per {
			addStats(&sum, &per[i].St)
		}
	}
	s.g.mu.Lock()
	addStats(&sum, &s.g.stats)
	bigItems, bigBytes, evicted, orphans := len(s.g.big), s.g.bigBytes, s.g.evicted, s.g.orphans
	s.g.mu.Unlock()
	s.mu.Lock()
	rejected, idleKicks := s.rejected, s.idleKick
	s.mu.Unlock()

	// Items and bytes come from a walk of the map: evictions and expiry
	// happen without the program seeing them.
	now := uint64(time.Now().Unix())
	var entries, live, bytes uint64
	var h uint64
	val := make([]byte, s.o.vsize)
	it := s.o.objs.Kv.Iterate()
	for it.Next(&h, &val) {
		entries++
		v := decodeVal(val)
		if v.Cas != 0 && v.Slow == 0 && !expired(v.Exptime, now) {
			live++
			bytes += uint64(v.Len)
		}
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	evictions := uint64(0)
	if sum.Inserts > entries {
		evictions = sum.Inserts - entries
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	up := time.Since(s.start)
	st := [][2]string{
		{"pid", strconv.Itoa(os.Getpid())},
		{"uptime", strconv.Itoa(int(up.Seconds()))},
		{"time", strconv.FormatInt(time.Now().Unix(), 10)},
		{"version", Version},
		{"max_connections", strconv.Itoa(s.o.cfg.MaxConns)},
		{"curr_connections", strconv.Itoa(s.conns() + 2)},
		{"rejected_connections", u(rejected)},
		{"cmd_get", u(sum.CmdGet)},
		{"cmd_set", u(sum.CmdSet)},
		{"cmd_touch", u(sum.CmdTouch)},
		{"get_hits", u(sum.GetHits)},
		{"get_misses", u(sum.GetMisses)},
		{"get_expired", u(sum.GetExpired)},
		{"delete_misses", u(sum.DeleteMisses)},
		{"delete_hits", u(sum.DeleteHits)},
		{"incr_misses", u(sum.IncrMisses)},
		{"incr_hits", u(sum.IncrHits)},
		{"decr_misses", u(sum.DecrMisses)},
		{"decr_hits", u(sum.DecrHits)},
		{"cas_misses", u(sum.CasMisses)},
		{"cas_hits", u(sum.CasHits)},
		{"cas_badval", u(sum.CasBadval)},
		{"touch_hits", u(sum.TouchHits)},
		{"touch_misses", u(sum.TouchMisses)},
	}
	if s.o.cfg.IdleTimeout > 0 {
		st = append(st, [2]string{"idle_kicks", u(idleKicks)}) // as memcached, only with a timeout
	}
	return append(st, [][2]string{
		{"limit_maxbytes", u(uint64(s.o.cfg.Entries) * uint64(s.o.vsize))},
		{"bytes", u(bytes + uint64(bigBytes))},
		{"curr_items", u(live + uint64(bigItems))},
		{"total_items", u(sum.TotalItems)},
		{"evictions", u(evictions + evicted)},
		{"xdp_rx", u(sum.Rx)},
		{"xdp_tx", u(sum.Tx)},
		{"xdp_pass", u(sum.Pass)},
		{"xdp_drop", u(sum.Drop)},
		{"reflect_drop", u(sum.ReflectDrop)},
		{"rate_drop", u(sum.RateDrop)},
		{"udp_too_large", u(sum.UdpTooLarge)},
		{"xdp_map_entries", u(entries)},
		{"xdp_max_value", u(uint64(s.o.cfg.MaxValue))},
		{"slow_items", u(uint64(bigItems))},
		{"slow_bytes", u(uint64(bigBytes))},
		{"slow_limit_bytes", u(uint64(s.o.cfg.SlowMemory))},
		{"slow_reclaimed", u(orphans)},
	}...), nil
}

func decodeVal(b []byte) kvKvVal {
	var v kvKvVal
	v.Cas = binary.LittleEndian.Uint64(b[unsafe.Offsetof(v.Cas):])
	v.Exptime = binary.LittleEndian.Uint64(b[unsafe.Offsetof(v.Exptime):])
	v.Flags = binary.LittleEndian.Uint32(b[unsafe.Offsetof(v.Flags):])
	v.Len = binary.LittleEndian.Uint32(b[unsafe.Offsetof(v.Len):])
	v.Klen = binary.LittleEndian.Uint16(b[unsafe.Offsetof(v.Klen):])
	v.Slow = b[unsafe.Offsetof(v.Slow)]
	return v
}

func addStats(dst, src *kvKvStats) {
	dst.Rx += src.Rx
	dst.Tx += src.Tx
	dst.Pass += src.Pass
	dst.Drop += src.Drop
	dst.ReflectDrop += src.ReflectDrop
	dst.RateDrop += src.RateDrop
	dst.UdpTooLarge += src.UdpTooLarge
	dst.CmdGet += src.CmdGet
	dst.GetHits += src.GetHits
	dst.GetMisses += src.GetMisses
	dst.GetExpired += src.GetExpired
	dst.CmdSet += src.CmdSet
	dst.CmdTouch += src.CmdTouch
	dst.TouchHits += src.TouchHits
	dst.TouchMisses += src.TouchMisses
	dst.DeleteHits += src.DeleteHits
	dst.DeleteMisses += src.DeleteMisses
	dst.IncrHits += src.IncrHits
	dst.IncrMisses += src.IncrMisses
	dst.DecrHits += src.DecrHits
	dst.DecrMisses += src.DecrMisses
	dst.CasHits += src.CasHits
	dst.CasMisses += src.CasMisses
	dst.CasBadval += src.CasBadval
	dst.TotalItems += src.TotalItems
	dst.Inserts += src.Inserts
	dst.Deletes += src.Deletes
}
