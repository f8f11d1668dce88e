package proxy

import "bytes"

// Limits of what the XDP program routes (bpf/proxy.bpf.c); anything beyond
// them goes to the slow path. Their values come from the program's BTF
// (enum proxy_limit, through bpf2go: proxy_bpfel.go), not retyped.
const (
	// PayloadMax is the largest UDP payload, frame header excluded, routed
	// in XDP: a 1500-byte MTU's worth.
	PayloadMax = int(proxyProxyLimitPROXY_PAYLOAD_MAX)
	// KeysMax is the most keys of one get routed in XDP.
	KeysMax = int(proxyProxyLimitPROXY_KEYS_MAX)
	// KeyMax is memcached's longest key.
	KeyMax = int(proxyProxyLimitPROXY_KEY_MAX)
	// BackendsMax is how many backends the BPF maps hold.
	BackendsMax = int(proxyProxyLimitPROXY_BACKENDS_MAX)
	// LineCopy bounds the first line of a request other than get/gets in
	// a datagram longer than it: XDP copies only that much to parse (a
	// storage command's data block is never read), so such a line must
	// end within it. The longest well-formed storage line is ~330 bytes.
	LineCopy = int(proxyProxyLimitPROXY_LINE_COPY)
	// RingMax is how many ring points the BPF map holds: 160 per backend
	// at equal weights, so 102 such backends.
	RingMax = int(proxyProxyLimitPROXY_RING_MAX)
)

// Route is the XDP program's route decision, in Go: the backend (an index
// into r's servers) that the request in payload (one datagram's payload
// after memcached's 8-byte frame header) goes to, or -1 when XDP leaves
// the request to the slow path. The program must agree with it on every
// input; the tests hold it to that.
//
// XDP routes a datagram holding exactly one request:
//   - get/gets with 1..KeysMax keys that all land on one backend;
//   - set/add/replace/append/prepend/cas whose data block (by its <bytes>)
//     ends the datagram;
//   - delete/incr/decr/touch, with nothing after the line.
//
// The command must start the line; tokens are separated by runs of up to
// 31 spaces; a key is 1..250 bytes, none a control character, space or
// DEL. The line ends at the first '\n' (a '\r' before it is dropped),
// within LineCopy bytes unless the command is get or gets.
// Everything else, well-formed or not, is the slow path's.
func Route(r *Ring, payload []byte) int {
	if len(payload) > PayloadMax {
		return -1
	}
	scan := payload
	if len(scan) > LineCopy && !bytes.HasPrefix(scan, []byte("get ")) && !bytes.HasPrefix(scan, []byte("gets")) {
		scan = scan[:LineCopy]
	}
	nl := bytes.IndexByte(scan, '\n')
	if nl < 0 {
		return -1
	}
	dataStart, lineEnd := nl+1, nl
	if nl > 0 && payload[nl-1] == '\r' {
		lineEnd--
	}
	t := tokenizer{line: payload[:lineEnd]}
	cmd, ok := t.next()
	if !ok || t.start != 0 {
		return -1
	}
	lookup := func(key []byte) int {
		for _, c := range key {
			if c <= ' ' || c == 0x7f {
				return -1
			}
		}
		return r.Lookup(key)
	}
	switch string(cmd) {
	case "get", "gets":
		first := -1
		k := 0
		for ; k < KeysMax; k++ {
			key, ok := t.next()
			if !ok {
				return -1
			}
			if len(key) == 0 {
				break
			}
			b := lookup(key)
			if b < 0 || first >= 0 && b != first {
				return -1
			}
			first = b
		}
		if k == KeysMax {
			if rest, ok := t.next(); !ok || len(rest) != 0 {
				return -1
			}
		}
		if first < 0 || dataStart != len(payload) {
			return -1
		}
		return first
	case "set", "add", "replace", "append", "prepend", "cas":
		key, ok := t.next()
		if !ok || len(key) == 0 {
			return -1
		}
		b := lookup(key)
		if b < 0 {
			return -1
		}
		for range 2 { // flags, exptime: present, not checked
			if tok, ok := t.next(); !ok || len(tok) == 0 {
				return -1
			}
		}
		tok, ok := t.next()
		if !ok || len(tok) == 0 || len(tok) > 6 {
			return -1
		}
		n := 0
		for _, c := range tok {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		if dataStart+n+2 != len(payload) {
			return -1
		}
		return b
	case "delete", "incr", "decr", "touch":
		key, ok := t.next()
		if !ok || len(key) == 0 {
			return -1
		}
		b := lookup(key)
		if b < 0 || dataStart != len(payload) {
			return -1
		}
		return b
	}
	return -1
}

// tokenizer is the XDP program's next_tok.
type tokenizer struct {
	line  []byte
	pos   int
	start int
}

// next returns the next token (empty at the line's end), or false for a
// run of 32 or more spaces or a token longer than KeyMax.
func (t *tokenizer) next() ([]byte, bool) {
	spaces := 0
	for t.pos < len(t.line) && t.line[t.pos] == ' ' && spaces < 32 {
		t.pos++
		spaces++
	}
	if spaces == 32 {
		return nil, false
	}
	t.start = t.pos
	for t.pos < len(t.line) && t.line[t.pos] != ' ' && t.pos-t.start <= KeyMax {
		t.pos++
	}
	tok := t.line[t.start:t.pos]
	return tok, len(tok) <= KeyMax
}
