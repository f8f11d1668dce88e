package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/xdplab/xdplab/lab/memcache"
	"golang.org/x/sys/unix"
)

// The pinned client: the same closed loop per socket (requests, slots,
// matching, checks and counts are udpConn's), driven so that a request costs
// less. Nearly all of a UDP request's cost against an XDP server on a veth
// is the kernel's (the client's user time is under a tenth of its CPU time),
// so what pays is fewer passes through the kernel's send path:
//
//   - UDP GSO: a batch of equal-sized requests (every GET of a workload is
//     one size) goes as one sendmsg with UDP_SEGMENT, one pass through the
//     UDP and IP layers for the batch, cut into datagrams before the
//     device; measured on a veth pair against the reflector, about 1.5–1.9×
//     the rate of per-datagram sends at half the client CPU per request.
//     Where the kernel refuses it (EIO, EINVAL), sendmmsg.
//   - sendmmsg and recvmmsg called directly (MSG_DONTWAIT) on message
//     headers built once, over one buffer that holds a batch's requests
//     back to back: nothing is allocated per batch or per request.
//   - UDP GRO: the replies a batch brings back arrive together, all of one
//     size (GET hits of one value size), so where the receiving device
//     does GRO (a NIC does; a veth only when turned on, which the
//     benchmarks' topologies do: netlab.HostSpec.GRO) they reach the
//     socket as one train that one recvmmsg message holds; about a
//     quarter less client CPU per request again, measured against the
//     reflector. Without device GRO, one datagram per message.
//   - fewer threads than CPUs (one per CPU but one, at most one per socket;
//     XDPLAB_BENCH_THREADS overrides), each locked to its OS thread and
//     pinned to a CPU with sched_setaffinity, serving its sockets in turn,
//     blocking in poll only when none had a reply.
//
// Client engines, Target.Client.
const (
	// ClientPinned is the default: pinned threads, raw batches.
	ClientPinned = "pinned"
	// ClientNetpoll is the first client: a goroutine per socket, x/net's
	// batch calls through Go's netpoller. Kept to compare against.
	ClientNetpoll = "netpoll"
)

// mmsghdr is struct mmsghdr (x/sys/unix has Msghdr but not this).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// rawIO is one socket's raw batch I/O: its descriptor, a send buffer that
// holds a batch back to back, and the message headers, all made once.
type rawIO struct {
	fd    int
	sbuf  []byte
	start []int
	siov  []unix.Iovec
	smsgs []mmsghdr
	rbufs [][]byte
	riov  []unix.Iovec
	rmsgs []mmsghdr

	// gso: batches of equal-sized requests go as one UDP_SEGMENT send.
	rctl   []byte
	gro    bool
	gso    bool
	gbuf   []byte // a batch's requests of one size, back to back
	done   []bool // which of a batch went by GSO
	gsoMsg unix.Msghdr
	gsoIov unix.Iovec
	gsoCtl []byte
}

func newRawIO(c *udpConn, inFlight int) (*rawIO, error) {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("bench: %T has no descriptor", c.nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawIO{fd: -1}
	// The descriptor stays the net.Conn's (non-blocking, closed with it);
	// the loop uses it only while the conn is open.
	if err := rc.Control(func(fd uintptr) { r.fd = int(fd) }); err != nil {
		return nil, err
	}
	r.sbuf = make([]byte, maxBatch*memcache.MaxDatagram)
	r.start = make([]int, maxBatch)
	r.done = make([]bool, maxBatch)
	r.siov = make([]unix.Iovec, maxBatch)
	r.smsgs = make([]mmsghdr, maxBatch)
	for i := range maxBatch {
		r.smsgs[i].hdr.Iov = &r.siov[i]
		r.smsgs[i].hdr.SetIovlen(1)
	}
	r.gso = !noGSO
	r.gbuf = make([]byte, 0, 1<<16)
	r.gsoCtl = make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&r.gsoCtl[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	r.gsoMsg.Iov = &r.gsoIov
	r.gsoMsg.SetIovlen(1)
	r.gsoMsg.Control = &r.gsoCtl[0]
	r.gsoMsg.SetControllen(len(r.gsoCtl))
	// UDP GRO: where the receiving device does GRO (netlab.HostSpec.GRO),
	// replies of one size that arrive together reach the socket as one
	// train, split here by the segment size the kernel gives in a control
	// message; a message can then hold up to 64 KiB. A socket has at most
	// inFlight replies to take, so as many messages as that.
	nmsg, size := min(maxBatch, inFlight), 2048
	if unix.SetsockoptInt(r.fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil {
		r.gro = true
		size = 1 << 16
	}
	r.rbufs = make([][]byte, nmsg)
	r.riov = make([]unix.Iovec, nmsg)
	r.rmsgs = make([]mmsghdr, nmsg)
	r.rctl = make([]byte, nmsg*ctlSpace)
	for i := range nmsg {
		r.rbufs[i] = make([]byte, size)
		r.riov[i].Base = &r.rbufs[i][0]
		r.riov[i].SetLen(len(r.rbufs[i]))
		r.rmsgs[i].hdr.Iov = &r.riov[i]
		r.rmsgs[i].hdr.SetIovlen(1)
		if r.gro {
			r.rmsgs[i].hdr.Control = &r.rctl[i*ctlSpace]
		}
	}
	return r, nil
}

// ctlSpace holds one UDP_GRO control message (an int).
const ctlSpace = unix.SizeofCmsghdr + 8

// groSize is the segment size of message i's UDP_GRO control message, or
// 0 when it has none (a single datagram).
func (r *rawIO) groSize(i int) int {
	h := &r.rmsgs[i].hdr
	if h.Controllen < unix.SizeofCmsghdr+4 {
		return 0
	}
	c := (*unix.Cmsghdr)(unsafe.Pointer(h.Control))
	if c.Level != unix.SOL_UDP || c.Type != unix.UDP_GRO {
		return 0
	}
	return int(*(*int32)(unsafe.Pointer(uintptr(unsafe.Pointer(h.Control)) + unix.SizeofCmsghdr)))
}

// slot is where request k of a batch is built: right after request k-1.
func (r *rawIO) slot(c *udpConn, k int) []byte {
	off := 0
	if k > 0 {
		off = r.start[k-1] + len(c.wbufs[k-1])
	}
	r.start[k] = off
	end := min(off+memcache.MaxDatagram, len(r.sbuf))
	return r.sbuf[off:off:end]
}

// writeGSO sends buf, datagrams of seg bytes back to back (the last may be
// shorter), as one train that the kernel cuts into datagrams (UDP_SEGMENT):
// one pass through the UDP and IP layers for them all instead of one each.
// false when the kernel refused GSO on this socket's path (EIO: the device
// does not offload checksums; EINVAL: a kernel without it), which turns it
// off for the socket.
func (r *rawIO) writeGSO(c *udpConn, buf []byte, seg int) (bool, error) {
	r.gsoIov.Base = &buf[0]
	r.gsoIov.SetLen(len(buf))
	*(*uint16)(unsafe.Pointer(&r.gsoCtl[unix.SizeofCmsghdr])) = uint16(seg)
	for {
		_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.gsoMsg)), unix.MSG_DONTWAIT)
		switch e {
		case 0:
			return true, nil
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLOUT}}
			unix.Poll(fds, 1)
		case unix.ECONNREFUSED:
			c.st.errors++ // an earlier datagram was refused
		case unix.EIO, unix.EINVAL, unix.ENOPROTOOPT, unix.EOPNOTSUPP:
			r.gso = false
			return false, nil
		case unix.EBADF:
			return false, net.ErrClosed
		default:
			return false, fmt.Errorf("bench: send: %w", e)
		}
	}
}

// noGSO turns GSO off, for tests of the sendmmsg path.
var noGSO bool

// gsoMax bounds a GSO send: the kernel's segment limit (UDP_MAX_SEGMENTS,
// 64 on older kernels) and a datagram's 64 KiB.
const gsoMax, gsoBytes = 64, 65000

// write sends requests 0..k of the batch: grouped by size (a workload's
// GETs are all one size, its SETs another), each group as GSO trains, and
// with sendmmsg what GSO does not take; it waits (poll) while the socket's
// buffer is full. The order within a batch is not kept across sizes; the
// requests are independent, and replies are matched by request id.
func (r *rawIO) write(c *udpConn, k int) error {
	clear(r.done[:k])
	if r.gso && k > 1 {
		sent, err := r.writeGrouped(c, k)
		if err != nil {
			return err
		}
		if sent {
			return nil
		}
	}
	n := 0
	for i := range k {
		if !r.done[i] {
			r.siov[n].Base = &c.wbufs[i][0]
			r.siov[n].SetLen(len(c.wbufs[i]))
			n++
		}
	}
	return r.writeMmsg(c, n)
}

// writeGrouped sends the batch as GSO trains, one size at a time; true
// when all went. Where GSO is refused it marks in r.done what went, for
// sendmmsg to send the rest.
func (r *rawIO) writeGrouped(c *udpConn, k int) (bool, error) {
	var sizes [4]int
	ns := 0
	for i := range k {
		n := len(c.wbufs[i])
		if !slices.Contains(sizes[:ns], n) {
			if ns == len(sizes) {
				return false, nil // no workload makes so many sizes
			}
			sizes[ns], ns = n, ns+1
		}
	}
	if ns == 1 && k <= gsoMax && r.start[k-1]+len(c.wbufs[k-1]) <= gsoBytes {
		// One size (a GET-only workload): the batch is one train as built.
		ok, err := r.writeGSO(c, r.sbuf[:r.start[k-1]+len(c.wbufs[k-1])], sizes[0])
		if ok {
			return true, err
		}
		return false, err
	}
	for _, size := range sizes[:ns] {
		per := min(gsoMax, gsoBytes/size)
		from, b := 0, r.gbuf[:0]
		for i := range k {
			if len(c.wbufs[i]) != size {
				continue
			}
			b = append(b, c.wbufs[i]...)
			if len(b)/size == per {
				ok, err := r.writeGSO(c, b, size)
				if !ok || err != nil {
					return false, err
				}
				for j := from; j <= i; j++ {
					if len(c.wbufs[j]) == size {
						r.done[j] = true
					}
				}
				from, b = i+1, b[:0]
			}
		}
		if len(b) > 0 {
			ok, err := r.writeGSO(c, b, size)
			if !ok || err != nil {
				return false, err
			}
			for j := from; j < k; j++ {
				if len(c.wbufs[j]) == size {
					r.done[j] = true
				}
			}
		}
	}
	return true, nil
}

// writeMmsg sends the n datagrams r.siov holds with sendmmsg.
func (r *rawIO) writeMmsg(c *udpConn, k int) error {
	sent := 0
	for sent < k {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.smsgs[sent])), uintptr(k-sent), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			sent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLOUT}}
			unix.Poll(fds, 1)
		case unix.ECONNREFUSED:
			c.st.errors++ // an earlier datagram was refused
		case unix.EBADF:
			return net.ErrClosed
		default:
			return fmt.Errorf("bench: send: %w", e)
		}
	}
	return nil
}

// read takes what the socket holds, up to a batch, without waiting; it
// returns how many datagrams it handed to c.receive.
func (r *rawIO) read(c *udpConn, src source, now time.Duration) (int, error) {
	if r.gro {
		for i := range r.rmsgs {
			r.rmsgs[i].hdr.SetControllen(ctlSpace)
		}
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.rmsgs[0])), uintptr(len(r.rmsgs)), unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0:
	case unix.EAGAIN, unix.EINTR:
		return 0, nil
	case unix.ECONNREFUSED:
		// ICMP port unreachable for an earlier datagram: those requests
		// time out as lost.
		c.st.errors++
		return 0, nil
	case unix.EBADF:
		return 0, net.ErrClosed
	default:
		return 0, fmt.Errorf("bench: receive: %w", e)
	}
	got := 0
	for i := range int(n) {
		d := r.rbufs[i][:r.rmsgs[i].n]
		seg := 0
		if r.gro {
			seg = r.groSize(i)
		}
		if seg <= 0 || seg >= len(d) {
			c.receive(src, d, now)
			got++
			continue
		}
		for len(d) > 0 {
			k := min(seg, len(d))
			c.receive(src, d[:k], now)
			d = d[k:]
			got++
		}
	}
	return got, nil
}

// pinnedThreads is how many threads the pinned client runs for n sockets:
// one per CPU but one, at least one, at most one per socket.
// XDPLAB_BENCH_THREADS sets the count (for experiments).
func pinnedThreads(n int) int {
	if v, err := strconv.Atoi(os.Getenv("XDPLAB_BENCH_THREADS")); err == nil && v > 0 {
		return min(n, v)
	}
	return max(1, min(n, runtime.NumCPU()-1))
}

// runPinned drives conns (each with its source) from pinned threads until
// stop, ctx's end, or every source is done with nothing in flight.
func runPinned(ctx context.Context, conns []*udpConn, srcs []source, base time.Time, stop time.Duration, inFlight int, timeout time.Duration) error {
	for _, c := range conns {
		if c.raw == nil {
			r, err := newRawIO(c, inFlight)
			if err != nil {
				return err
			}
			c.raw = r
		}
	}
	nt := pinnedThreads(len(conns))
	errc := make(chan error, nt)
	for t := range nt {
		var mine []*udpConn
		var msrc []source
		for i := t; i < len(conns); i += nt {
			mine, msrc = append(mine, conns[i]), append(msrc, srcs[i])
		}
		go func() { errc <- pinnedLoop(ctx, t, mine, msrc, base, stop, inFlight, timeout) }()
	}
	var first error
	for range nt {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func pinnedLoop(ctx context.Context, cpu int, conns []*udpConn, srcs []source, base time.Time, stop time.Duration, inFlight int, timeout time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(cpu % runtime.NumCPU())
	_ = unix.SchedSetaffinity(0, &set) // best effort: a cpuset may forbid it
	defer func() {
		set.Zero()
		for i := range runtime.NumCPU() {
			set.Set(i)
		}
		_ = unix.SchedSetaffinity(0, &set)
	}()
	fds := make([]unix.PollFd, len(conns))
	for i, c := range conns {
		fds[i] = unix.PollFd{Fd: int32(c.raw.fd), Events: unix.POLLIN}
		c.rd.start(timeout)
	}
	tick := int(max(conns[0].rd.tick/time.Millisecond, 1))
	for ctx.Err() == nil {
		now := time.Since(base)
		if now >= stop {
			return nil
		}
		got, busy := 0, false
		for i, c := range conns {
			src := srcs[i]
			if src.done() && c.infl == 0 {
				continue
			}
			busy = true
			c.expire(src, now, timeout)
			if err := c.send(src, now, inFlight); err != nil {
				return err
			}
			if c.infl == 0 {
				continue
			}
			n, err := c.raw.read(c, src, time.Since(base))
			if err != nil {
				if err == net.ErrClosed {
					return nil
				}
				return err
			}
			got += n
		}
		if !busy {
			return nil
		}
		if got == 0 {
			unix.Poll(fds, tick)
		}
	}
	return nil
}
