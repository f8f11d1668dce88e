package memcache

import "bytes"

// DefaultPort is memcached's port.
const DefaultPort = 11211

// Unanswerable reports whether a UDP request from source port src, to a
// server on port own, with this payload (after the frame header) must get
// no reply at all, so that one spoofed datagram cannot start a loop between
// two servers (two stores, or a store and memcached, which answers every
// line, its own replies included, with at least "ERROR"):
//
//   - a source port below 1024 is a well-known service (echo, chargen,
//     DNS...), never a memcached client;
//   - a source port of DefaultPort or own is another server's (or this
//     one's) serving port, whose "request" is a reply;
//   - a first line starting with a reply keyword (see isReply) is another
//     server's reply, whatever its port. Every reply the store and the proxy
//     send starts with one, so two of them stop after one exchange.
//
// Anything else, including a line memcached answers "ERROR" (an unknown
// word, an empty line), is answered as memcached answers it. The XDP
// programs apply the port rule themselves (bpf/kv.bpf.c, bpf/proxy.bpf.c)
// and pass reply lines up, which fail the command match there.
func Unanswerable(src, own uint16, payload []byte) bool {
	return src < 1024 || src == DefaultPort || src == own || isReply(payload)
}

// replyWords are the first tokens of memcached 1.6's text replies, and the
// meta protocol's reply codes. Commands are lower case, so none is one.
var replyWords = map[string]bool{
	"ERROR": true, "CLIENT_ERROR": true, "SERVER_ERROR": true,
	"VALUE": true, "END": true, "STAT": true, "VERSION": true, "OK": true,
	"STORED": true, "NOT_STORED": true, "EXISTS": true, "NOT_FOUND": true,
	"DELETED": true, "TOUCHED": true,
	"HD": true, "VA": true, "EN": true, "NF": true, "NS": true, "EX": true, "MN": true, "ME": true,
}

// isReply reports whether payload's first line, read as memcached reads a
// command line (it ends at '\n' or NUL, leading spaces skipped, tokens split
// on ' '), starts with a reply: a reply word, or a number (incr and decr
// answer with the bare value).
func isReply(payload []byte) bool {
	line, _, _ := bytes.Cut(payload, []byte("\n"))
	line, _, _ = bytes.Cut(line, []byte{0})
	tok, _, _ := bytes.Cut(bytes.TrimLeft(trimCR(line), " "), []byte(" "))
	if replyWords[string(tok)] {
		return true
	}
	for _, c := range tok {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(tok) > 0
}
