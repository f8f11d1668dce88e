package memcache

// Reassembler rebuilds replies from memcached UDP datagrams. memcached sends
// a reply as one or more messages under the request's id, each message
// split into datagrams numbered 0..Total-1; the reply is the concatenation
// of the messages and is complete when ReplyLen says so. Datagrams for ids
// not expected are ignored. The zero value is ready to use; it is not safe
// for concurrent use.
type Reassembler struct {
	pending map[uint16]*reassembly
}

type reassembly struct {
	expect []Command
	reply  []byte
	parts  [][]byte // datagram payloads of the current message, by seq
	got    int
}

// Expect starts collecting the reply to a request with the given id whose
// raw bytes held requests with the given commands, in order (see
// ExpectedReplies). It replaces anything collected for id before.
func (r *Reassembler) Expect(id uint16, cmds ...Command) {
	if r.pending == nil {
		r.pending = make(map[uint16]*reassembly)
	}
	r.pending[id] = &reassembly{expect: cmds}
}

// Forget stops collecting the reply for id.
func (r *Reassembler) Forget(id uint16) { delete(r.pending, id) }

// Pending returns the number of replies being collected.
func (r *Reassembler) Pending() int { return len(r.pending) }

// Add takes one datagram. When it completes the reply for its request id,
// Add returns the reply (owned by the caller) and done, and forgets the id.
func (r *Reassembler) Add(datagram []byte) (id uint16, reply []byte, done bool) {
	h, err := ParseHeader(datagram)
	if err != nil {
		return 0, nil, false
	}
	p := r.pending[h.RequestID]
	if p == nil || h.Total == 0 || h.Seq >= h.Total {
		return h.RequestID, nil, false
	}
	payload := datagram[HeaderLen:]
	if h.Total == 1 {
		p.reply = append(p.reply, payload...)
		p.parts, p.got = nil, 0
	} else {
		// A datagram that does not fit the message being collected starts a
		// new one; the old one lost a datagram and the reply will time out.
		if len(p.parts) != int(h.Total) || p.parts[h.Seq] != nil {
			p.parts, p.got = make([][]byte, h.Total), 0
		}
		p.parts[h.Seq] = append([]byte(nil), payload...)
		p.got++
		if p.got == len(p.parts) {
			for _, part := range p.parts {
				p.reply = append(p.reply, part...)
			}
			p.parts, p.got = nil, 0
		}
	}
	n, ok := replyLenSeq(p.expect, p.reply)
	if !ok {
		return h.RequestID, nil, false
	}
	delete(r.pending, h.RequestID)
	return h.RequestID, p.reply[:n:n], true
}

// replyLenSeq frames the replies to several requests sent together.
func replyLenSeq(cmds []Command, buf []byte) (int, bool) {
	pos := 0
	for _, c := range cmds {
		n, ok := ReplyLen(c, buf[pos:])
		if !ok {
			return 0, false
		}
		pos += n
	}
	return pos, true
}

// ExpectedReplies parses raw, which may hold several requests, and returns
// the commands whose replies memcached sends, in order: requests with
// noreply, errors memcached keeps quiet about, quit, and an incomplete tail
// get none, and replies an Error.DropPending discards are left out.
// Rejected requests are framed as one line (CmdUnknown).
func ExpectedReplies(raw []byte) []Command {
	var cmds []Command
	sent := 0 // memcached sends what it has queued after each get
	for len(raw) > 0 {
		req, n, err := ParseRequest(raw)
		if err == ErrIncomplete {
			break
		}
		if e, ok := err.(*Error); ok {
			if e.Close {
				break
			}
			if e.DropPending {
				cmds = cmds[:sent]
			}
			if !e.Silent {
				cmds = append(cmds, CmdUnknown)
			}
			raw = raw[min(len(raw), n+e.Swallow):]
			continue
		}
		if req.Command == CmdQuit {
			break // memcached closes the connection
		}
		if !req.NoReply {
			cmds = append(cmds, req.Command)
		}
		if req.Command == CmdGet || req.Command == CmdGets {
			sent = len(cmds)
		}
		raw = raw[n:]
	}
	return cmds
}
