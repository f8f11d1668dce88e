package workshop

import (
	"bytes"
	"fmt"
	"time"

	"github.com/xdplab/xdplab/lab/internal/frame"
)

// Lesson 3's checks.
const (
	CheckReplyPass  = "frames that are no one-key get still pass"
	CheckReplyTX    = "a get is answered with XDP_TX"
	CheckReplyFrame = "the reply is a well-formed frame (lengths, IPv4 checksum, UDP checksum 0 or right)"
	CheckReplyAddr  = "the reply goes back to the client (MACs, addresses and ports swapped)"
	CheckReplyText  = "the reply is memcached's miss: the request's id, one datagram, END\\r\\n"
	CheckReplyVeth  = "on a veth pair: a client's get is answered END with no server running"
)

func init() {
	checks := []Check{
		{Name: CheckReplyPass, Run: replyPass},
		{Name: CheckReplyTX, Run: replyTX,
			Hint: "reply_miss() returns XDP_PASS until you write it; it must end in return XDP_TX"},
		{Name: CheckReplyFrame, Run: func(e *Env) error { _, err := e.reply(Request(0x1234, "get foo\r\n")); return err },
			Hint: "the reply is shorter than the request: bpf_xdp_adjust_tail(ctx, delta) with delta < 0 cuts it, and udp->len, ip->tot_len and ip->check must say the new size (set udp->check = 0)"},
		{Name: CheckReplyAddr, Run: replyAddr,
			Hint: "swap eth->h_source/h_dest (__builtin_memcpy through a 6-byte buffer), ip->saddr/daddr and udp->source/dest"},
		{Name: CheckReplyText, Run: replyText},
	}
	checks = append(checks, lesson1Checks...)
	checks = append(checks, lesson2Checks...)
	checks = append(checks, Check{Name: CheckReplyVeth, Run: replyVeth,
		Hint: "a veth delivers an XDP_TX frame only to a peer with an XDP program (the checker puts one there), and drops frames with a wrong checksum silently: the checks above must pass first"})
	register(&Lesson{N: 3, Slug: "reply", Title: "answer with XDP_TX", Program: "xdp_prog", Checks: checks})
}

// reply runs a request and returns the reply it was answered with, parsed
// and checked for lengths and checksums.
func (e *Env) reply(req frame.Datagram) (frame.Datagram, error) {
	act, out, err := e.Run(req.Frame())
	if err != nil {
		return frame.Datagram{}, err
	}
	if act != XDPTX {
		return frame.Datagram{}, fmt.Errorf("%q came back %s, want XDP_TX", req.Payload, ActionName(act))
	}
	r, err := frame.Parse(out)
	if err != nil {
		return frame.Datagram{}, fmt.Errorf("the reply to %q is no well-formed frame: %v", req.Payload, err)
	}
	return r, nil
}

func replyPass(e *Env) error {
	frames := otherFrames()
	for req, what := range notGets {
		frames[what] = Request(1, req).Frame()
	}
	return e.allPass(frames, "only one-key gets are answered, the rest must pass")
}

func replyTX(e *Env) error {
	act, _, err := e.Run(Request(1, "get foo\r\n").Frame())
	if err != nil {
		return err
	}
	if act != XDPTX {
		return fmt.Errorf("\"get foo\\r\\n\" came back %s, want XDP_TX", ActionName(act))
	}
	return nil
}

func replyAddr(e *Env) error {
	req := Request(1, "get foo\r\n")
	r, err := e.reply(req)
	if err != nil {
		return err
	}
	if !bytes.Equal(r.SrcMAC, req.DstMAC) || !bytes.Equal(r.DstMAC, req.SrcMAC) {
		return fmt.Errorf("the reply goes from MAC %s to %s; the request came from %s to %s, so swap them", r.SrcMAC, r.DstMAC, req.SrcMAC, req.DstMAC)
	}
	if r.Src != req.Dst || r.Dst != req.Src {
		return fmt.Errorf("the reply goes from %s to %s; the request came from %s to %s, so swap addresses and ports", r.Src, r.Dst, req.Src, req.Dst)
	}
	return nil
}

func replyText(e *Env) error {
	for _, req := range []frame.Datagram{Request(0x1234, "get foo\r\n"), Request(7, "get a-much-longer-key-than-foo\r\n")} {
		r, err := e.reply(req)
		if err != nil {
			return err
		}
		if r.ID != req.ID || r.Seq != 0 || r.Total != 1 {
			return fmt.Errorf("the reply's frame header is id %d, seq %d, total %d; want the request's id %d, seq 0, total 1", r.ID, r.Seq, r.Total, req.ID)
		}
		if string(r.Payload) != "END\r\n" {
			return fmt.Errorf("the reply to %q is %q, want \"END\\r\\n\" (memcached's answer to a get of a missing key)", req.Payload, r.Payload)
		}
	}
	return nil
}

func replyVeth(e *Env) error {
	p, err := e.Pair()
	if err != nil {
		return err
	}
	s, err := p.Sockets(false) // no server: only the program can answer
	if err != nil {
		return err
	}
	defer s.Close()
	got, err := s.Exchange(77, "get over-the-wire\r\n", 3*time.Second)
	if err != nil {
		return fmt.Errorf("the client got no answer to a get: %v", err)
	}
	if got != "END\r\n" {
		return fmt.Errorf("the client got %q, want \"END\\r\\n\"", got)
	}
	return nil
}
