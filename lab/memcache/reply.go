package memcache

import (
	"bytes"
	"errors"
	"fmt"
)

// ReplyLen reports whether buf starts with a complete reply to a request
// with command cmd, and its length. Replies to get and gets run to "END"
// past any VALUE blocks; stats replies run past STAT, ITEM and PREFIX lines
// to their last line; quit has an empty reply; everything else is one line.
// An error line (ERROR, CLIENT_ERROR, SERVER_ERROR) ends any reply.
func ReplyLen(cmd Command, buf []byte) (n int, complete bool) {
	switch cmd {
	case CmdQuit:
		return 0, true
	case CmdGet, CmdGets:
		pos := 0
		for {
			eol := bytes.IndexByte(buf[pos:], '\n')
			if eol < 0 {
				return 0, false
			}
			eol += pos
			line := trimCR(buf[pos:eol])
			if !bytes.HasPrefix(line, []byte("VALUE ")) {
				return eol + 1, true
			}
			v, err := ParseValueLine(line)
			if err != nil {
				return eol + 1, true // not a reply we can frame; stop here
			}
			end := eol + 1 + v.Bytes + 2
			if len(buf) < end {
				return 0, false
			}
			pos = end
		}
	case CmdStats:
		pos := 0
		for {
			eol := bytes.IndexByte(buf[pos:], '\n')
			if eol < 0 {
				return 0, false
			}
			line := buf[pos : pos+eol]
			pos += eol + 1
			if !bytes.HasPrefix(line, []byte("STAT ")) &&
				!bytes.HasPrefix(line, []byte("ITEM ")) &&
				!bytes.HasPrefix(line, []byte("PREFIX ")) {
				return pos, true
			}
		}
	default:
		eol := bytes.IndexByte(buf, '\n')
		if eol < 0 {
			return 0, false
		}
		return eol + 1, true
	}
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// ValueHeader is a parsed "VALUE <key> <flags> <bytes> [<cas>]" line.
type ValueHeader struct {
	Key    []byte // aliases the parsed line
	Flags  uint32
	Bytes  int
	CAS    uint64
	HasCAS bool
}

// ParseValueLine parses a VALUE line, with or without its "\r\n".
func ParseValueLine(line []byte) (ValueHeader, error) {
	line = trimCR(bytes.TrimSuffix(line, []byte("\n")))
	var f [6][]byte
	nf := 0
	for rest := line; nf < len(f); nf++ {
		var field []byte
		var found bool
		field, rest, found = bytes.Cut(rest, []byte(" "))
		f[nf] = field
		if !found {
			nf++
			break
		}
	}
	if nf != 4 && nf != 5 || string(f[0]) != "VALUE" || len(f[1]) == 0 {
		return ValueHeader{}, fmt.Errorf("memcache: bad VALUE line %q", line)
	}
	flags, ok1 := parseDecimal(f[2], 1<<32-1)
	n, ok2 := parseDecimal(f[3], 1<<31-1)
	if !ok1 || !ok2 {
		return ValueHeader{}, fmt.Errorf("memcache: bad VALUE line %q", line)
	}
	v := ValueHeader{Key: f[1], Flags: uint32(flags), Bytes: int(n)}
	if nf == 5 {
		cas, ok := parseDecimal(f[4], 1<<64-1)
		if !ok {
			return ValueHeader{}, fmt.Errorf("memcache: bad VALUE line %q", line)
		}
		v.CAS, v.HasCAS = cas, true
	}
	return v, nil
}

// parseDecimal parses the plain decimal numbers servers write, up to max.
func parseDecimal(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (max-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// Item is a key and its value, as stored by the client's storage methods
// and returned by Get and Gets.
type Item struct {
	Key     string
	Value   []byte
	Flags   uint32
	Exptime int32  // used when storing; not returned by get
	CAS     uint64 // returned by gets; used by cas
}

// ServerError is an ERROR, CLIENT_ERROR or SERVER_ERROR reply.
type ServerError struct {
	Line string // without "\r\n"
}

func (e *ServerError) Error() string { return "memcache: server replied " + e.Line }

// ErrUnexpectedReply is wrapped by errors for replies that do not fit the
// request.
var ErrUnexpectedReply = errors.New("memcache: unexpected reply")

// IsErrorReply reports whether reply starts with an error line (ERROR,
// CLIENT_ERROR or SERVER_ERROR), the way a server refuses a request.
func IsErrorReply(reply []byte) bool {
	line, _, _ := bytes.Cut(reply, []byte("\n"))
	return errorLine(trimCR(line)) != nil
}

// errorLine returns a *ServerError if line is an error reply.
func errorLine(line []byte) error {
	if string(line) == "ERROR" || bytes.HasPrefix(line, []byte("CLIENT_ERROR ")) ||
		bytes.HasPrefix(line, []byte("SERVER_ERROR ")) {
		return &ServerError{Line: string(line)}
	}
	return nil
}

// ParseItems parses a complete get or gets reply. An error reply yields a
// *ServerError along with the items before it.
func ParseItems(reply []byte) ([]Item, error) {
	var items []Item
	for pos := 0; ; {
		eol := bytes.IndexByte(reply[pos:], '\n')
		if eol < 0 {
			return items, fmt.Errorf("%w: get reply without END: %q", ErrUnexpectedReply, reply)
		}
		line := trimCR(reply[pos : pos+eol])
		pos += eol + 1
		if string(line) == "END" {
			return items, nil
		}
		if err := errorLine(line); err != nil {
			return items, err
		}
		v, err := ParseValueLine(line)
		if err != nil {
			return items, fmt.Errorf("%w: %v", ErrUnexpectedReply, err)
		}
		if len(reply)-pos < v.Bytes+2 || string(reply[pos+v.Bytes:pos+v.Bytes+2]) != "\r\n" {
			return items, fmt.Errorf("%w: truncated value for %q", ErrUnexpectedReply, v.Key)
		}
		items = append(items, Item{
			Key:   string(v.Key),
			Value: bytes.Clone(reply[pos : pos+v.Bytes]),
			Flags: v.Flags,
			CAS:   v.CAS,
		})
		pos += v.Bytes + 2
	}
}

// NormalizeCAS returns a copy of a get or gets reply in which each cas
// unique is replaced by its rank of first appearance (1, 2, ...), so that
// replies from servers that number cas differently compare equal when they
// agree on which values share a cas. Bytes it cannot frame are copied as
// they are.
func NormalizeCAS(reply []byte) []byte {
	out := make([]byte, 0, len(reply))
	seen := map[uint64]uint64{}
	for pos := 0; pos < len(reply); {
		eol := bytes.IndexByte(reply[pos:], '\n')
		if eol < 0 {
			return append(out, reply[pos:]...)
		}
		raw := reply[pos : pos+eol+1]
		pos += eol + 1
		v, err := ParseValueLine(raw)
		if err != nil || !v.HasCAS {
			out = append(out, raw...)
			continue
		}
		id, ok := seen[v.CAS]
		if !ok {
			id = uint64(len(seen) + 1)
			seen[v.CAS] = id
		}
		out = fmt.Appendf(out, "VALUE %s %d %d %d\r\n", v.Key, v.Flags, v.Bytes, id)
		end := min(len(reply), pos+v.Bytes+2)
		out = append(out, reply[pos:end]...)
		pos = end
	}
	return out
}
