package memcache

import (
	"bytes"
	"errors"
	"math"
	"strconv"
)

// Command is a text-protocol command.
type Command uint8

// The commands the codec parses. CmdUnknown frames a reply as one line, which
// is what memcached sends for anything it rejects.
const (
	CmdUnknown Command = iota
	CmdGet
	CmdGets
	CmdSet
	CmdAdd
	CmdReplace
	CmdAppend
	CmdPrepend
	CmdCAS
	CmdDelete
	CmdIncr
	CmdDecr
	CmdTouch
	CmdStats
	CmdFlushAll
	CmdVersion
	CmdVerbosity
	CmdQuit
)

var cmdNames = [...]string{
	CmdUnknown:   "unknown",
	CmdGet:       "get",
	CmdGets:      "gets",
	CmdSet:       "set",
	CmdAdd:       "add",
	CmdReplace:   "replace",
	CmdAppend:    "append",
	CmdPrepend:   "prepend",
	CmdCAS:       "cas",
	CmdDelete:    "delete",
	CmdIncr:      "incr",
	CmdDecr:      "decr",
	CmdTouch:     "touch",
	CmdStats:     "stats",
	CmdFlushAll:  "flush_all",
	CmdVersion:   "version",
	CmdVerbosity: "verbosity",
	CmdQuit:      "quit",
}

// String returns the command's name on the wire.
func (c Command) String() string {
	if int(c) < len(cmdNames) {
		return cmdNames[c]
	}
	return "Command(" + strconv.Itoa(int(c)) + ")"
}

// IsStorage reports whether c carries a data block (set, add, replace,
// append, prepend, cas).
func (c Command) IsStorage() bool { return c >= CmdSet && c <= CmdCAS }

// MaxKeyLen is the longest key memcached accepts.
const MaxKeyLen = 250

const (
	// maxTokens is memcached's MAX_TOKENS: the tokenizer stops after
	// maxTokens-1 tokens and leaves the rest of the line unsplit.
	maxTokens = 24
	// maxLineNoNewline is how many bytes memcached buffers without a '\n'
	// before it gives up on a connection that is not sending a multi-get.
	maxLineNoNewline = 2048
)

// Request is one parsed text-protocol request. Its byte slices alias the
// buffer it was parsed from. Numbers hold what memcached makes of the
// request, wrapped to their width as memcached wraps them.
type Request struct {
	Command Command
	Key     []byte   // single-key commands
	Keys    [][]byte // get and gets
	Flags   uint32   // storage commands
	Exptime int32    // storage commands and touch; the delay of flush_all
	Value   []byte   // storage commands, without the trailing "\r\n"
	CAS     uint64   // cas
	Delta   uint64   // incr and decr
	Level   uint32   // verbosity
	Args    []string // stats
	NoReply bool
}

// ErrIncomplete means buf holds no complete request yet: read more bytes and
// parse again from the same start.
var ErrIncomplete = errors.New("memcache: incomplete request")

// Error is a request memcached rejects. Msg is the line memcached replies
// with; Reply gives the bytes a server should send.
type Error struct {
	Msg string // e.g. "CLIENT_ERROR bad data chunk", without "\r\n"

	// Silent is set when noreply suppresses the reply, as memcached does
	// for every error found after it has seen "noreply".
	Silent bool

	// Swallow is how many bytes after the consumed ones memcached reads and
	// discards (the data block of a value too large for the cache). Over
	// TCP memcached sends the reply only once they are swallowed.
	Swallow int

	// Close means memcached closes the connection without a reply: a line
	// longer than 2048 bytes without '\n' that is not a get or gets (or
	// one longer than Parser.MaxLine). Replies queued since the last get
	// or gets are not sent either.
	Close bool

	// DropPending means memcached also throws away the replies to earlier
	// requests that it has queued but not yet sent: it does so for a get or
	// gets with an over-long key. memcached sends its queued replies after
	// every get or gets that succeeds, every 20 requests (its -R) and once
	// it has worked through what it read, so what is lost is the replies
	// to the requests since then that arrived in the same read.
	DropPending bool

	// Unsupported marks a command memcached implements but this codec does
	// not (gat, gats, bget, meta commands, slabs, lru_crawler, ...).
	// memcached answers these; Msg is "ERROR", what a server without them
	// should say.
	Unsupported bool
}

func (e *Error) Error() string {
	switch {
	case e.Close:
		return "memcache: line too long without newline (memcached closes the connection)"
	case e.Unsupported:
		return "memcache: unsupported command"
	}
	return "memcache: request rejected: " + e.Msg
}

// Reply returns the bytes memcached sends for the error, or nil when it
// sends nothing.
func (e *Error) Reply() []byte {
	if e.Silent || e.Close {
		return nil
	}
	return []byte(e.Msg + "\r\n")
}

const (
	msgError       = "ERROR"
	msgBadFormat   = "CLIENT_ERROR bad command line format"
	msgBadChunk    = "CLIENT_ERROR bad data chunk"
	msgBadDelta    = "CLIENT_ERROR invalid numeric delta argument"
	msgBadExptime  = "CLIENT_ERROR invalid exptime argument"
	msgDeleteUsage = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
	msgTooLarge    = "SERVER_ERROR object too large for cache"
)

// unsupported are commands memcached 1.6 answers that the codec does not
// parse.
var unsupported = map[string]bool{
	"gat": true, "gats": true, "bget": true,
	"mg": true, "ms": true, "md": true, "ma": true, "mn": true, "me": true,
	"shutdown": true, "slabs": true, "cache_memlimit": true, "debugtime": true,
	"lru_crawler": true, "lru": true, "watch": true, "misbehave": true,
	"extstore": true, "refresh_certs": true,
}

// Parser parses requests. The zero value behaves like ParseRequest.
type Parser struct {
	// MaxItemSize, if positive, is the largest item the server stores, in
	// memcached's accounting (ItemSize); memcached's is its -I setting,
	// 1 MiB by default. A storage command for a bigger item gets
	// "SERVER_ERROR object too large for cache" and its data block is
	// swallowed (Error.Swallow); memcached also deletes the key's current
	// item when the command is set (not for add, replace, append, prepend
	// or cas).
	MaxItemSize int

	// MaxLine, if positive, bounds request lines. memcached closes the
	// connection on a line of more than 2048 bytes without '\n' unless it
	// is a get or gets, which it buffers without a bound; a line longer
	// than MaxLine, with or without its '\n', gets the same Error (Close).
	MaxLine int
}

// ItemSize is the memory memcached 1.6 (64-bit, cas enabled) charges an
// item against its item size limit: a 48-byte header, 8 bytes of cas, the
// key and a NUL, 4 bytes of flags unless they are 0, and the value with its
// "\r\n". Measured: with -I 1m the longest value for a 1-byte key and flags
// 0 is 1048516 bytes.
func ItemSize(keyLen int, flags uint32, valueLen int) int {
	n := 48 + 8 + keyLen + 1 + valueLen + 2
	if flags != 0 {
		n += 4
	}
	return n
}

// ParseRequest parses one request from the start of buf, as memcached 1.6
// would. It returns the request and the bytes it used. On a rejected
// request the error is an *Error and n is the number of bytes memcached
// consumed before going on to the next command (see Error.Swallow for more
// it may discard). If buf does not yet hold a complete request the error is
// ErrIncomplete.
func ParseRequest(buf []byte) (req Request, n int, err error) {
	return Parser{}.Parse(buf)
}

// Parse is ParseRequest with p's limits.
func (p Parser) Parse(buf []byte) (req Request, n int, err error) {
	nl := bytes.IndexByte(buf, '\n')
	if p.MaxLine > 0 && (nl > p.MaxLine || nl < 0 && len(buf) > p.MaxLine) {
		return Request{}, len(buf), &Error{Close: true}
	}
	if nl < 0 {
		if len(buf) > maxLineNoNewline && !multiGetPrefix(buf) {
			return Request{}, len(buf), &Error{Close: true}
		}
		return Request{}, 0, ErrIncomplete
	}
	next := nl + 1
	line := buf[:nl]
	if nl > 1 && buf[nl-1] == '\r' {
		line = buf[:nl-1]
	}
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i] // memcached works on a C string
	}

	var tokBuf [maxTokens - 1][]byte
	tok, rest := tokenize(line, tokBuf[:0])
	// memcached counts a terminal token, so its ntokens is len(tok)+1.
	nt := len(tok) + 1
	fail := func(msg string, silent bool) (Request, int, error) {
		return Request{}, next, &Error{Msg: msg, Silent: silent}
	}
	if len(tok) == 0 || len(tok[0]) < 2 {
		return fail(msgError, false)
	}
	noreply := string(tok[len(tok)-1]) == "noreply" && len(tok) > 1

	switch name := string(tok[0]); name {
	case "get", "gets":
		if nt < 3 {
			return fail(msgError, false)
		}
		req.Command = CmdGet
		if name == "gets" {
			req.Command = CmdGets
		}
		req.Keys = make([][]byte, 0, len(tok)-1)
		req.Keys = append(req.Keys, tok[1:]...)
		if rest != nil {
			req.Keys, _ = tokenizeAll(rest, req.Keys)
		}
		for _, k := range req.Keys {
			if len(k) > MaxKeyLen {
				return Request{}, next, &Error{Msg: msgBadFormat, DropPending: true}
			}
		}
		return req, next, nil

	case "set", "add", "replace", "append", "prepend", "cas":
		cas := name == "cas"
		want := 6
		if cas {
			want = 7
		}
		if nt != want && nt != want+1 {
			return fail(msgError, false)
		}
		req.Command = storageCmds[name]
		req.NoReply = noreply
		if len(tok[1]) > MaxKeyLen {
			return fail(msgBadFormat, noreply)
		}
		req.Key = tok[1]
		flags, ok1 := safeStrtoul(tok[2])
		exptime, ok2 := safeStrtol(tok[3])
		vlen, ok3 := safeStrtol(tok[4])
		if !ok1 || !ok2 || !ok3 {
			return fail(msgBadFormat, noreply)
		}
		if cas {
			var ok bool
			if req.CAS, ok = safeStrtoull(tok[5]); !ok {
				return fail(msgBadFormat, noreply)
			}
		}
		if vlen < 0 || vlen > math.MaxInt32-2 {
			return fail(msgBadFormat, noreply)
		}
		req.Flags, req.Exptime = flags, exptime
		size := int(vlen)
		if p.MaxItemSize > 0 && ItemSize(len(req.Key), flags, size) > p.MaxItemSize {
			return Request{}, next, &Error{Msg: msgTooLarge, Silent: noreply, Swallow: size + 2}
		}
		end := next + size + 2
		if len(buf) < end {
			return Request{}, 0, ErrIncomplete
		}
		if buf[end-2] != '\r' || buf[end-1] != '\n' {
			return Request{}, end, &Error{Msg: msgBadChunk, Silent: noreply}
		}
		req.Value = buf[next : next+size : next+size]
		return req, end, nil

	case "incr", "decr":
		if nt != 4 && nt != 5 {
			return fail(msgError, false)
		}
		req.Command = CmdIncr
		if name == "decr" {
			req.Command = CmdDecr
		}
		req.NoReply = noreply
		if len(tok[1]) > MaxKeyLen {
			return fail(msgBadFormat, noreply)
		}
		req.Key = tok[1]
		var ok bool
		if req.Delta, ok = safeStrtoull(tok[2]); !ok {
			return fail(msgBadDelta, noreply)
		}
		return req, next, nil

	case "touch":
		if nt != 4 && nt != 5 {
			return fail(msgError, false)
		}
		req.Command = CmdTouch
		req.NoReply = noreply
		if len(tok[1]) > MaxKeyLen {
			return fail(msgBadFormat, noreply)
		}
		req.Key = tok[1]
		var ok bool
		if req.Exptime, ok = safeStrtol(tok[2]); !ok {
			return fail(msgBadExptime, noreply)
		}
		return req, next, nil

	case "delete":
		if nt < 3 || nt > 5 {
			return fail(msgError, false)
		}
		req.Command = CmdDelete
		if nt > 3 {
			// memcached still accepts the old "delete <key> 0" form.
			holdZero := string(tok[2]) == "0"
			req.NoReply = noreply
			if !(nt == 4 && (holdZero || noreply) || nt == 5 && holdZero && noreply) {
				return fail(msgDeleteUsage, noreply)
			}
		}
		if len(tok[1]) > MaxKeyLen {
			return fail(msgBadFormat, req.NoReply)
		}
		req.Key = tok[1]
		return req, next, nil

	case "stats":
		req.Command = CmdStats
		for _, t := range tok[1:] {
			req.Args = append(req.Args, string(t))
		}
		if rest != nil {
			more, _ := tokenizeAll(rest, nil)
			for _, t := range more {
				req.Args = append(req.Args, string(t))
			}
		}
		return req, next, nil

	case "flush_all":
		if nt > 4 {
			return fail(msgError, false)
		}
		req.Command = CmdFlushAll
		req.NoReply = noreply
		plain := 2
		if noreply {
			plain = 3
		}
		if nt != plain {
			var ok bool
			if req.Exptime, ok = safeStrtol(tok[1]); !ok {
				return fail(msgBadExptime, noreply)
			}
		}
		return req, next, nil

	case "version":
		req.Command = CmdVersion
		return req, next, nil

	case "quit":
		req.Command = CmdQuit
		return req, next, nil

	case "verbosity":
		if nt != 3 && nt != 4 {
			return fail(msgError, false)
		}
		req.Command = CmdVerbosity
		req.NoReply = noreply
		var ok bool
		if req.Level, ok = safeStrtoul(tok[1]); !ok {
			return fail(msgBadFormat, noreply)
		}
		return req, next, nil

	default:
		if unsupported[name] {
			return Request{}, next, &Error{Msg: msgError, Unsupported: true}
		}
		return fail(msgError, false)
	}
}

var storageCmds = map[string]Command{
	"set": CmdSet, "add": CmdAdd, "replace": CmdReplace,
	"append": CmdAppend, "prepend": CmdPrepend, "cas": CmdCAS,
}

// multiGetPrefix reports whether memcached keeps buffering a long line
// without '\n': only a get or gets after at most 100 spaces.
func multiGetPrefix(buf []byte) bool {
	i := 0
	for i < len(buf) && buf[i] == ' ' {
		i++
	}
	if i > 100 {
		return false
	}
	return bytes.HasPrefix(buf[i:], []byte("get ")) || bytes.HasPrefix(buf[i:], []byte("gets "))
}

// tokenize splits line on ' ' like memcached's tokenize_command: at most
// cap(tok) tokens, and rest is the unsplit remainder (nil if none).
func tokenize(line []byte, tok [][]byte) (toks [][]byte, rest []byte) {
	s := 0
	for e := 0; e < len(line); e++ {
		if line[e] != ' ' {
			continue
		}
		if s != e {
			tok = append(tok, line[s:e:e])
			if len(tok) == cap(tok) {
				if e+1 < len(line) {
					rest = line[e+1:]
				}
				return tok, rest
			}
		}
		s = e + 1
	}
	if s != len(line) {
		tok = append(tok, line[s:len(line):len(line)])
	}
	return tok, nil
}

// tokenizeAll splits line on ' ' without a limit.
func tokenizeAll(line []byte, tok [][]byte) ([][]byte, []byte) {
	for _, t := range bytes.Split(line, []byte(" ")) {
		if len(t) > 0 {
			tok = append(tok, t[:len(t):len(t)])
		}
	}
	return tok, nil
}

// isCSpace is C's isspace in the "C" locale.
func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// cStrto parses like C's strtoull/strtoll base 10 on a 64-bit machine:
// leading whitespace and one sign are skipped, then digits. It returns the
// magnitude, whether there was a '-', the index after the digits, and false
// if there are no digits or the magnitude overflows 64 bits.
func cStrto(s []byte) (mag uint64, neg bool, end int, ok bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	overflow := false
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := uint64(s[i] - '0')
		if mag > (math.MaxUint64-d)/10 {
			overflow = true
		}
		mag = mag*10 + d
	}
	if i == start || overflow {
		return 0, false, 0, false
	}
	return mag, neg, i, true
}

// endOK is memcached's check after strto*: the number must be followed by
// whitespace or the end of the token.
func endOK(s []byte, end int) bool { return end == len(s) || isCSpace(s[end]) }

// safeStrtoull is memcached's safe_strtoull: "-1" is rejected, but "-0" and
// negative values that stay positive as int64 are not (strtoull negates).
func safeStrtoull(s []byte) (uint64, bool) {
	mag, neg, end, ok := cStrto(s)
	if !ok || !endOK(s, end) {
		return 0, false
	}
	v := mag
	if neg {
		v = -mag
	}
	if int64(v) < 0 && neg {
		return 0, false
	}
	return v, true
}

// safeStrtoul is memcached's safe_strtoul on LP64: parsed as 64 bits, then
// truncated to 32.
func safeStrtoul(s []byte) (uint32, bool) {
	v, ok := safeStrtoull(s)
	return uint32(v), ok
}

// safeStrtol is memcached's safe_strtol on LP64: strtol's 64-bit range is
// checked, then the value is truncated to 32 bits.
func safeStrtol(s []byte) (int32, bool) {
	mag, neg, end, ok := cStrto(s)
	if !ok || !endOK(s, end) {
		return 0, false
	}
	if !neg && mag > math.MaxInt64 || neg && mag > 1<<63 {
		return 0, false // ERANGE
	}
	v := int64(mag)
	if neg {
		v = -v
	}
	return int32(v), true
}

// AppendRequest appends the wire form of r to dst. It writes what
// ParseRequest reads back as r: numbers in decimal, " noreply" when set,
// flush_all's delay only when non-zero. A request with an unknown command
// appends nothing.
func AppendRequest(dst []byte, r Request) []byte {
	if r.Command == CmdUnknown || int(r.Command) >= len(cmdNames) {
		return dst
	}
	dst = append(dst, r.Command.String()...)
	switch r.Command {
	case CmdGet, CmdGets:
		for _, k := range r.Keys {
			dst = append(append(dst, ' '), k...)
		}
	case CmdSet, CmdAdd, CmdReplace, CmdAppend, CmdPrepend, CmdCAS:
		dst = append(append(dst, ' '), r.Key...)
		dst = strconv.AppendUint(append(dst, ' '), uint64(r.Flags), 10)
		dst = strconv.AppendInt(append(dst, ' '), int64(r.Exptime), 10)
		dst = strconv.AppendInt(append(dst, ' '), int64(len(r.Value)), 10)
		if r.Command == CmdCAS {
			dst = strconv.AppendUint(append(dst, ' '), r.CAS, 10)
		}
		dst = appendNoReply(dst, r.NoReply)
		dst = append(append(dst, "\r\n"...), r.Value...)
	case CmdDelete:
		dst = append(append(dst, ' '), r.Key...)
		dst = appendNoReply(dst, r.NoReply)
	case CmdIncr, CmdDecr:
		dst = append(append(dst, ' '), r.Key...)
		dst = strconv.AppendUint(append(dst, ' '), r.Delta, 10)
		dst = appendNoReply(dst, r.NoReply)
	case CmdTouch:
		dst = append(append(dst, ' '), r.Key...)
		dst = strconv.AppendInt(append(dst, ' '), int64(r.Exptime), 10)
		dst = appendNoReply(dst, r.NoReply)
	case CmdStats:
		for _, a := range r.Args {
			dst = append(append(dst, ' '), a...)
		}
	case CmdFlushAll:
		if r.Exptime != 0 {
			dst = strconv.AppendInt(append(dst, ' '), int64(r.Exptime), 10)
		}
		dst = appendNoReply(dst, r.NoReply)
	case CmdVerbosity:
		dst = strconv.AppendUint(append(dst, ' '), uint64(r.Level), 10)
		dst = appendNoReply(dst, r.NoReply)
	}
	return append(dst, "\r\n"...)
}

func appendNoReply(dst []byte, on bool) []byte {
	if on {
		dst = append(dst, " noreply"...)
	}
	return dst
}
