package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
)

// tcpConn is one TCP connection and its closed loop. Requests are
// pipelined, up to InFlight at a time, each top-up in one write; a
// connection's replies come in the order of its requests (memcached and
// nutcracker both answer in order), so what is in flight is a FIFO and a
// reply is framed by memcache.ReplyLen for the oldest request's command.
type tcpConn struct {
	nc     net.Conn
	redial func() (net.Conn, error)

	q    []slot // ring of the requests in flight, the oldest at head
	head int
	infl int

	wbuf []byte
	rbuf []byte // rbuf[:rlen] is received but not yet a whole reply
	rlen int
	rd   readDeadline
	tally
}

func newTCPConn(nc net.Conn, redial func() (net.Conn, error)) (*tcpConn, error) {
	if _, ok := nc.(*net.TCPConn); !ok {
		return nil, fmt.Errorf("bench: dial returned %T, not a TCP connection", nc)
	}
	return &tcpConn{nc: nc, redial: redial, rbuf: make([]byte, 256<<10)}, nil
}

func (c *tcpConn) close() { c.nc.Close() }

func (c *tcpConn) loop(ctx context.Context, src source, base time.Time, stop time.Duration, inFlight int, timeout time.Duration) error {
	if len(c.q) != inFlight && c.infl == 0 {
		c.q, c.head = make([]slot, inFlight), 0
	}
	c.rd.start(timeout)
	for ctx.Err() == nil {
		now := time.Since(base)
		if now >= stop || (src.done() && c.infl == 0) {
			return nil
		}
		// A reply overdue on a stream means the stream is stuck (or the
		// server dropped the request): start over on a new connection,
		// where no late reply can be taken for another request's.
		if c.infl > 0 && now-c.q[c.head].sent >= timeout {
			if err := c.restart(src, now); err != nil {
				return err
			}
			continue
		}
		if err := c.send(src, base, now, inFlight, timeout); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			c.st.errors++
			if err := c.restart(src, now); err != nil {
				return err
			}
			continue
		}
		if c.infl == 0 {
			if src.done() {
				return nil
			}
			continue
		}
		c.rd.arm(c.nc, base, now)
		n, err := c.nc.Read(c.rbuf[c.rlen:])
		now = time.Since(base)
		c.rlen += n
		c.receive(src, now)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, net.ErrClosed):
			return nil
		default:
			// EOF or a reset: the server closed on us.
			c.st.errors++
			if err := c.restart(src, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// send tops the requests in flight up to inFlight, in one write.
func (c *tcpConn) send(src source, base time.Time, now time.Duration, inFlight int, timeout time.Duration) error {
	b := c.wbuf[:0]
	for c.infl < inFlight {
		s := &c.q[(c.head+c.infl)%len(c.q)]
		var ok bool
		if b, ok = src.fill(s, b); !ok {
			break
		}
		s.sent = now
		c.infl++
	}
	c.wbuf = b
	if len(b) == 0 {
		return nil
	}
	// A server that stops reading while we do not read its replies would
	// block this write for ever; the deadline turns that into a restart.
	c.nc.SetWriteDeadline(base.Add(now + timeout))
	_, err := c.nc.Write(b)
	return err
}

// receive takes every whole reply at the start of rbuf, oldest request
// first.
func (c *tcpConn) receive(src source, now time.Duration) {
	off := 0
	for c.infl > 0 {
		s := &c.q[c.head]
		cmd := memcache.CmdSet
		if s.get {
			cmd = memcache.CmdGet
		}
		n, ok := memcache.ReplyLen(cmd, c.rbuf[off:c.rlen])
		if !ok {
			break
		}
		c.head = (c.head + 1) % len(c.q)
		c.infl--
		src.reply(&c.tally, s, c.rbuf[off:off+n], now)
		off += n
	}
	if c.infl == 0 && off < c.rlen {
		c.st.errors++ // bytes no request asked for
		off = c.rlen
	}
	c.rlen = copy(c.rbuf, c.rbuf[off:c.rlen])
	if c.rlen == len(c.rbuf) {
		// One reply larger than the buffer: make room for the rest.
		c.rbuf = append(c.rbuf, make([]byte, len(c.rbuf))...)
	}
}

// restart declares everything in flight lost and reconnects.
func (c *tcpConn) restart(src source, now time.Duration) error {
	for ; c.infl > 0; c.infl-- {
		src.lost(&c.tally, &c.q[c.head], now)
		c.head = (c.head + 1) % len(c.q)
	}
	return c.reconnect()
}

// forget drops what is in flight; replies to it may still come, so only a
// new connection keeps them from being taken for later requests'.
func (c *tcpConn) forget() {
	if c.infl > 0 || c.rlen > 0 {
		c.reconnect() // on failure the closed conn fails the next loop
	}
}

func (c *tcpConn) reconnect() error {
	c.head, c.infl, c.rlen, c.rd.at = 0, 0, 0, 0
	c.nc.Close()
	nc, err := c.redial()
	if err != nil {
		return fmt.Errorf("bench: reconnect: %w", err)
	}
	c.nc = nc
	return nil
}
