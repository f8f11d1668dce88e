package memcache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Client talks to one memcached-compatible server over UDP or TCP. It is
// safe for concurrent use: requests from many goroutines are pipelined on
// the one socket. Over UDP each request gets its own request id; over TCP
// replies are matched to requests in order.
//
// A request whose reply never comes (one memcached drops, such as a UDP
// request spanning several datagrams, or a lost datagram) is only bounded
// by the context's deadline, so give every call a deadline.
type Client struct {
	conn net.Conn
	udp  bool

	wmu sync.Mutex // serialises writes, so TCP replies come back in queue order

	mu         sync.Mutex // guards the fields below
	err        error      // sticky; set when the connection is done
	nextID     uint16
	calls      map[uint16]*Call // UDP, by request id
	re         Reassembler      // UDP
	queue      []*Call          // TCP, in send order
	readerDone chan struct{}
}

// Call is a request in flight, returned by Send and SendExpect.
type Call struct {
	c      *Client
	id     uint16
	expect []Command
	done   chan struct{}
	reply  []byte
	err    error
	finish sync.Once
}

const udpReadBuffer = 4 << 20

// DialUDP returns a client that sends each request as memcached UDP
// datagrams to addr ("host:port").
func DialUDP(addr string) (*Client, error) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	// Long replies arrive as a burst of datagrams; a bigger buffer loses
	// fewer of them. The kernel caps it at net.core.rmem_max.
	conn.(*net.UDPConn).SetReadBuffer(udpReadBuffer)
	return newClient(conn, true), nil
}

// DialTCP returns a client on one TCP connection to addr ("host:port").
func DialTCP(addr string) (*Client, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return newClient(conn, false), nil
}

func newClient(conn net.Conn, udp bool) *Client {
	c := &Client{conn: conn, udp: udp, calls: map[uint16]*Call{}, readerDone: make(chan struct{})}
	if udp {
		go c.readUDP()
	} else {
		go c.readTCP()
	}
	return c
}

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.readerDone
	return err
}

// LocalAddr returns the client's local address.
func (c *Client) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// Do sends raw, which holds one or more requests exactly as they go on the
// wire, and returns the raw reply to them all. If no reply is expected
// (noreply, quit, a rejection memcached keeps quiet about; see
// ExpectedReplies) Do returns nil, nil once raw is sent. Over UDP raw
// goes out as one message under a new request id, split into datagrams if
// longer than one.
func (c *Client) Do(ctx context.Context, raw []byte) ([]byte, error) {
	call, err := c.Send(raw)
	if err != nil {
		return nil, err
	}
	return call.Wait(ctx)
}

// Send sends raw like Do but does not wait for the reply, so that many
// requests can be in flight; collect each reply with Call.Wait. Over UDP,
// keep the number in flight well below what the server's socket buffer
// holds (memcached keeps the kernel default, about 200 small datagrams):
// datagrams beyond it are lost.
func (c *Client) Send(raw []byte) (*Call, error) {
	return c.SendExpect(raw, ExpectedReplies(raw))
}

// SendExpect is Send with the replies to wait for given, in order, rather
// than parsed from raw: for requests the codec does not know, or to save
// the parse. With no commands the call completes once raw is sent.
func (c *Client) SendExpect(raw []byte, expect []Command) (*Call, error) {
	call := &Call{c: c, expect: expect, done: make(chan struct{})}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	if c.udp {
		id, ok := c.freeID()
		if !ok {
			c.mu.Unlock()
			return nil, errors.New("memcache: all 65536 UDP request ids in flight")
		}
		call.id = id
		if len(expect) > 0 {
			c.calls[id] = call
			c.re.Expect(id, expect...)
		}
	} else if len(expect) > 0 {
		c.queue = append(c.queue, call)
	}
	c.mu.Unlock()

	var err error
	if c.udp {
		for _, d := range AppendDatagrams(nil, call.id, raw) {
			if _, err = c.conn.Write(d); err != nil {
				break
			}
		}
	} else {
		_, err = c.conn.Write(raw)
	}
	if err != nil {
		err = fmt.Errorf("memcache: send: %w", err)
		if c.udp {
			c.forget(call)
		} else {
			c.fail(err) // the stream is out of step now
		}
		return nil, err
	}
	if len(expect) == 0 {
		call.complete(nil, nil)
	}
	return call, nil
}

// freeID returns an unused UDP request id. c.mu must be held.
func (c *Client) freeID() (uint16, bool) {
	for range 1 << 16 {
		c.nextID++
		if _, busy := c.calls[c.nextID]; !busy {
			return c.nextID, true
		}
	}
	return 0, false
}

// ID returns the UDP request id the call was sent with (0 over TCP).
func (call *Call) ID() uint16 { return call.id }

// Wait returns the reply to the call, or the context's error. Over TCP a
// reply that arrives after Wait gave up is read and dropped, so later
// replies stay in step.
func (call *Call) Wait(ctx context.Context) ([]byte, error) {
	select {
	case <-call.done:
		return call.reply, call.err
	case <-ctx.Done():
		call.c.forget(call)
		select {
		case <-call.done: // the reply raced the deadline
			return call.reply, call.err
		default:
		}
		return nil, ctx.Err()
	}
}

func (call *Call) complete(reply []byte, err error) {
	call.finish.Do(func() {
		call.reply, call.err = reply, err
		close(call.done)
	})
}

// forget drops a UDP call so that its id can be reused.
func (c *Client) forget(call *Call) {
	if !c.udp {
		return
	}
	c.mu.Lock()
	if c.calls[call.id] == call {
		delete(c.calls, call.id)
		c.re.Forget(call.id)
	}
	c.mu.Unlock()
}

// fail ends the client: calls in flight and later sends get err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	calls := c.queue
	c.queue = nil
	for id, call := range c.calls {
		calls = append(calls, call)
		delete(c.calls, id)
		c.re.Forget(id)
	}
	c.mu.Unlock()
	for _, call := range calls {
		call.complete(nil, err)
	}
}

func (c *Client) readUDP() {
	defer close(c.readerDone)
	buf := make([]byte, 1<<16)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				c.fail(err)
				return
			}
			// Typically ECONNREFUSED from an ICMP error: nobody listens.
			// The requests in flight are lost; the socket still works.
			c.failUDPCalls(fmt.Errorf("memcache: receive: %w", err))
			continue
		}
		c.mu.Lock()
		id, reply, done := c.re.Add(buf[:n])
		call := c.calls[id]
		if done {
			delete(c.calls, id)
		}
		c.mu.Unlock()
		if done && call != nil {
			call.complete(reply, nil)
		}
	}
}

func (c *Client) failUDPCalls(err error) {
	c.mu.Lock()
	var calls []*Call
	for id, call := range c.calls {
		calls = append(calls, call)
		delete(c.calls, id)
		c.re.Forget(id)
	}
	c.mu.Unlock()
	for _, call := range calls {
		call.complete(nil, err)
	}
}

func (c *Client) readTCP() {
	defer close(c.readerDone)
	var buf []byte
	tmp := make([]byte, 1<<16)
	for {
		n, err := c.conn.Read(tmp)
		buf = append(buf, tmp[:n]...)
		c.mu.Lock()
		var done []*Call
		var replies [][]byte
		for len(c.queue) > 0 {
			call := c.queue[0]
			m, ok := replyLenSeq(call.expect, buf)
			if !ok {
				break
			}
			done = append(done, call)
			replies = append(replies, append([]byte(nil), buf[:m]...))
			buf = buf[m:]
			c.queue = c.queue[1:]
		}
		c.mu.Unlock()
		for i, call := range done {
			call.complete(replies[i], nil)
		}
		if err != nil {
			c.fail(fmt.Errorf("memcache: receive: %w", err))
			return
		}
	}
}
