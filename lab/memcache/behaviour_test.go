package memcache

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	key250 = strings.Repeat("k", 250)
	key251 = strings.Repeat("k", 251)
	val250 = strings.Repeat("m", 250) // a 250-byte key that some row stores
)

const (
	badFormat = "CLIENT_ERROR bad command line format\r\n"
	badChunk  = "CLIENT_ERROR bad data chunk\r\n"
	badDelta  = "CLIENT_ERROR invalid numeric delta argument\r\n"
	badExp    = "CLIENT_ERROR invalid exptime argument\r\n"
	usage     = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
)

// behaviour records what memcached 1.6.18 replies to each input, sent alone
// on a fresh TCP connection (want, "<close>" when it hangs up), and what the
// codec makes of the input (codec; empty means the same as want). The codec
// side renders each parsed request as "<cmd>", each rejection as the error's
// Reply, and a tail that needs more bytes as "<incomplete>".
// TestBehaviourMemcached re-measures want against a live memcached;
// TestBehaviourCodec checks codec. Rows that store use their own keys, as
// rows run in parallel against one server; serial rows affect the whole
// server.
var behaviour = []struct {
	name, in, want, codec string
	serial                bool
}{
	// Lines and tokens.
	{name: "version", in: "version\r\n", want: "VERSION 1.6.18\r\n", codec: "<version>"},
	{name: "version ignores arguments", in: "version foo bar\r\n", want: "VERSION 1.6.18\r\n", codec: "<version>"},
	{name: "empty line", in: "\r\n", want: "ERROR\r\n"},
	{name: "bare LF", in: "\n", want: "ERROR\r\n"},
	{name: "one-letter command", in: "x\r\n", want: "ERROR\r\n"},
	{name: "unknown command", in: "ge\r\n", want: "ERROR\r\n"},
	{name: "commands are case sensitive", in: "GET a\r\n", want: "ERROR\r\n"},
	{name: "tab does not separate tokens", in: "get\tg0\r\n", want: "ERROR\r\n"},
	{name: "NUL ends the line", in: "\x00get g0\r\n", want: "ERROR\r\n"},
	{name: "NUL inside a get line", in: "get g0\x00 more\r\n", want: "END\r\n", codec: "<get>"},
	{name: "LF without CR", in: "get g0\n", want: "END\r\n", codec: "<get>"},
	{name: "leading and repeated spaces", in: "   get  g0  \r\n", want: "END\r\n", codec: "<get>"},
	{name: "two requests", in: "version\r\nget g0\r\n", want: "VERSION 1.6.18\r\nEND\r\n", codec: "<version><get>"},
	{name: "incomplete line waits", in: "get g0", want: "", codec: "<incomplete>"},
	{name: "2048 bytes without LF waits", in: strings.Repeat("x", 2048), want: "", codec: "<incomplete>"},
	{name: "2049 bytes without LF close", in: strings.Repeat("x", 2049), want: "<close>", codec: "<close>"},
	{name: "long multi-get line waits", in: "get " + strings.Repeat("g0 ", 1000), want: "", codec: "<incomplete>"},
	{name: "long gets line waits", in: "gets " + strings.Repeat("g0 ", 1000), want: "", codec: "<incomplete>"},
	{name: "long get after 100 spaces waits", in: strings.Repeat(" ", 100) + "get " + strings.Repeat("g0 ", 1000), want: "", codec: "<incomplete>"},
	{name: "long get after 101 spaces close", in: strings.Repeat(" ", 101) + "get " + strings.Repeat("g0 ", 1000), want: "<close>", codec: "<close>"},
	{name: "long line with LF is fine", in: strings.Repeat(" ", 3000) + "get g0\r\n", want: "END\r\n", codec: "<get>"},
	{name: "more than 24 tokens", in: "set " + strings.Repeat("a ", 30) + "\r\n", want: "ERROR\r\n"},

	// Retrieval.
	{name: "get without key", in: "get\r\n", want: "ERROR\r\n"},
	{name: "get with space but no key", in: "get \r\n", want: "ERROR\r\n"},
	{name: "gets without key", in: "gets\r\n", want: "ERROR\r\n"},
	{name: "get miss", in: "get g0\r\n", want: "END\r\n", codec: "<get>"},
	{name: "get key with tab", in: "get g0\tb\r\n", want: "END\r\n", codec: "<get>"},
	{name: "get key with CR", in: "get g0\rb\r\n", want: "END\r\n", codec: "<get>"},
	{name: "get 250-byte key", in: "get " + key250 + "\r\n", want: "END\r\n", codec: "<get>"},
	{name: "get 251-byte key", in: "get " + key251 + "\r\n", want: badFormat},
	// A get with an over-long key also discards the replies memcached has
	// queued but not sent (Error.DropPending); it sends what it has queued
	// after every get that succeeds.
	{name: "get long key drops queued replies", in: "set g1 0 0 1\r\na\r\nget g1 " + key251 + " g1\r\n", want: badFormat},
	{name: "get long second key drops queued replies", in: "version\r\nget g0 " + key251 + "\r\nversion\r\n", want: badFormat + "VERSION 1.6.18\r\n", codec: badFormat + "<version>"},
	{name: "get long first key drops queued replies", in: "version\r\nget " + key251 + " g0\r\n", want: badFormat},
	{name: "get that succeeds flushes replies", in: "version\r\nget g0\r\nversion\r\ngets " + key251 + "\r\n", want: "VERSION 1.6.18\r\nEND\r\n" + badFormat, codec: "<version><get>" + badFormat},
	{name: "incr long key keeps queued replies", in: "version\r\nincr " + key251 + " 1\r\n", want: "VERSION 1.6.18\r\n" + badFormat, codec: "<version>" + badFormat},
	{name: "get long key after 30 keys", in: "get " + strings.Repeat("g0 ", 30) + key251 + "\r\n", want: badFormat},
	{name: "get 30 keys", in: "set g2 0 0 1\r\na\r\nget " + strings.Repeat("g2 ", 30) + "\r\n", want: "STORED\r\n" + strings.Repeat("VALUE g2 0 1\r\na\r\n", 30) + "END\r\n", codec: "<set><get>"},
	{name: "get noreply is a key", in: "get noreply\r\n", want: "END\r\n", codec: "<get>"},

	// Storage command lines.
	{name: "set", in: "set s1 0 0 1\r\na\r\n", want: "STORED\r\n", codec: "<set>"},
	{name: "set too few tokens: data block read as a command", in: "set s 0 0\r\na\r\n", want: "ERROR\r\nERROR\r\n"},
	{name: "set too many tokens", in: "set s 0 0 1 noreply x\r\na\r\n", want: "ERROR\r\nERROR\r\n"},
	{name: "set sixth token other than noreply is ignored", in: "set s2 0 0 1 foo\r\na\r\n", want: "STORED\r\n", codec: "<set>"},
	{name: "set noreply", in: "set s3 0 0 1 noreply\r\na\r\n", want: "", codec: "<set>"},
	{name: "noreply as bytes hides the error", in: "set s 0 0 noreply\r\na\r\n", want: "ERROR\r\n"},
	{name: "negative bytes", in: "set s 0 0 -1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "negative bytes noreply", in: "set s 0 0 -1 noreply\r\na\r\n", want: "ERROR\r\n"},
	{name: "bytes INT_MAX-1", in: "set s 0 0 2147483646\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "bytes 2^32-1 wraps to -1", in: "set s 0 0 4294967295\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "bytes 2^32+1 wraps to 1", in: "set s4 0 0 4294967297\r\na\r\nget s4\r\n", want: "STORED\r\nVALUE s4 0 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "bytes overflow 64 bits", in: "set s 0 0 9999999999999999999999\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "bytes trailing junk", in: "set s 0 0 1x\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "bytes not a number", in: "set s 0 0 x\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "data block one byte long", in: "set s 0 0 1\r\nab\r\n", want: badChunk + "ERROR\r\n"},
	{name: "data block two bytes long", in: "set s 0 0 1\r\nabc\r\n", want: badChunk + "ERROR\r\n"},
	{name: "data block without CR", in: "set s 0 0 1\r\na\nversion\r\n", want: badChunk + "ERROR\r\n"},
	{name: "bad data chunk noreply", in: "set s 0 0 1 noreply\r\nab\r\nversion\r\n", want: "ERROR\r\nVERSION 1.6.18\r\n", codec: "ERROR\r\n<version>"},
	{name: "short data block waits", in: "set s 0 0 3\r\na\r\n", want: "", codec: "<incomplete>"},
	{name: "empty value", in: "set s5 0 0 0\r\n\r\nget s5\r\n", want: "STORED\r\nVALUE s5 0 0\r\n\r\nEND\r\n", codec: "<set><get>"},
	{name: "flags not a number", in: "set s x 0 1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "negative flags", in: "set s -1 0 1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "flags overflow 64 bits", in: "set s 99999999999999999999 0 1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "flags 2^32-1", in: "set s6 4294967295 0 1\r\na\r\nget s6\r\n", want: "STORED\r\nVALUE s6 4294967295 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "flags 2^32 wraps to 0", in: "set s7 4294967296 0 1\r\na\r\nget s7\r\n", want: "STORED\r\nVALUE s7 0 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "flags 2^63 wraps to 0", in: "set s8 9223372036854775808 0 1\r\na\r\nget s8\r\n", want: "STORED\r\nVALUE s8 0 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "plus and minus zero", in: "set s9 +1 -0 +1\r\na\r\nget s9\r\n", want: "STORED\r\nVALUE s9 1 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "whitespace after a number", in: "set s10 0 0 1\t\r\na\r\n", want: "STORED\r\n", codec: "<set>"},
	{name: "whitespace and junk after a number", in: "set s11 0 0 1\tjunk\r\na\r\n", want: "STORED\r\n", codec: "<set>"},
	{name: "whitespace before a number", in: "set s21 \t7 \v0 \f1\r\na\r\nget s21\r\n", want: "STORED\r\nVALUE s21 7 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "whitespace but no digits", in: "set s 0 0 \t\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "sign but no digits", in: "set s 0 0 +\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "two signs", in: "set s 0 0 +-1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "exptime minus 2^63", in: "set s22 0 -9223372036854775808 1\r\na\r\nget s22\r\n", want: "STORED\r\nVALUE s22 0 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "exptime below minus 2^63", in: "set s 0 -9223372036854775809 1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "negative delta that stays positive", in: "set n6 0 0 1\r\n5\r\nincr n6 -18446744073709551615\r\n", want: "STORED\r\n6\r\n", codec: "<set><incr>"},
	{name: "CR CR LF", in: "set s12 0 0 1\r\r\na\r\n", want: "STORED\r\n", codec: "<set>"},
	{name: "exptime not a number", in: "set s 0 x 1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "exptime overflow 64 bits", in: "set s 0 99999999999999999999 1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "exptime 2^32 wraps to 0", in: "set s13 0 4294967296 1\r\na\r\nget s13\r\n", want: "STORED\r\nVALUE s13 0 1\r\na\r\nEND\r\n", codec: "<set><get>"},
	{name: "exptime 2^31 wraps negative", in: "set s14 0 2147483648 1\r\na\r\nget s14\r\n", want: "STORED\r\nEND\r\n", codec: "<set><get>"},
	{name: "negative exptime", in: "set s15 0 -1 1\r\na\r\nget s15\r\n", want: "STORED\r\nEND\r\n", codec: "<set><get>"},
	{name: "250-byte key", in: "set " + val250 + " 0 0 1\r\na\r\n", want: "STORED\r\n", codec: "<set>"},
	{name: "251-byte key", in: "set " + key251 + " 0 0 1\r\na\r\n", want: badFormat + "ERROR\r\n"},
	{name: "251-byte key noreply", in: "set " + key251 + " 0 0 1 noreply\r\na\r\nversion\r\n", want: "ERROR\r\nVERSION 1.6.18\r\n", codec: "ERROR\r\n<version>"},
	{name: "key with control character", in: "set s\x01\x7f 0 0 1\r\nx\r\nget s\x01\x7f\r\n", want: "STORED\r\nVALUE s\x01\x7f 0 1\r\nx\r\nEND\r\n", codec: "<set><get>"},
	{name: "NUL in a set line", in: "set s\x000 0 1\r\na\r\n", want: "ERROR\r\nERROR\r\n"},
	{name: "data block holding a command", in: "set s16 0 0 9\r\nversion\r\n\r\n", want: "STORED\r\n", codec: "<set>"},
	{name: "add", in: "add s17 0 0 1\r\na\r\nadd s17 0 0 1\r\nb\r\n", want: "STORED\r\nNOT_STORED\r\n", codec: "<add><add>"},
	{name: "replace missing", in: "replace s18 0 0 1\r\na\r\n", want: "NOT_STORED\r\n", codec: "<replace>"},
	{name: "append missing", in: "append s19 0 0 1\r\na\r\n", want: "NOT_STORED\r\n", codec: "<append>"},
	{name: "prepend missing", in: "prepend s19 0 0 1\r\na\r\n", want: "NOT_STORED\r\n", codec: "<prepend>"},
	{name: "append too few tokens", in: "append s 0 0\r\na\r\n", want: "ERROR\r\nERROR\r\n"},
	{name: "prepend bad bytes", in: "prepend s 0 0 z\r\na\r\n", want: badFormat + "ERROR\r\n"},

	// cas.
	{name: "cas too few tokens", in: "cas c 0 0 1\r\nb\r\n", want: "ERROR\r\nERROR\r\n"},
	{name: "cas too many tokens", in: "cas c 0 0 1 1 noreply x\r\nb\r\n", want: "ERROR\r\nERROR\r\n"},
	{name: "cas unique not a number", in: "cas c 0 0 1 x\r\nb\r\n", want: badFormat + "ERROR\r\n"},
	{name: "cas unique negative", in: "cas c 0 0 1 -1\r\nb\r\n", want: badFormat + "ERROR\r\n"},
	{name: "cas unique overflow", in: "cas c 0 0 1 18446744073709551616\r\nb\r\n", want: badFormat + "ERROR\r\n"},
	{name: "cas unique as noreply", in: "cas c 0 0 1 noreply\r\nb\r\n", want: "ERROR\r\n"},
	{name: "cas missing key", in: "cas c1 0 0 1 1\r\nb\r\n", want: "NOT_FOUND\r\n", codec: "<cas>"},
	{name: "cas mismatch", in: "set c2 0 0 1\r\na\r\ncas c2 0 0 1 18446744073709551615 x\r\nb\r\n", want: "STORED\r\nEXISTS\r\n", codec: "<set><cas>"},
	{name: "cas noreply", in: "cas c3 0 0 1 1 noreply\r\nb\r\n", want: "", codec: "<cas>"},

	// incr and decr.
	{name: "incr without arguments", in: "incr\r\n", want: "ERROR\r\n"},
	{name: "incr without delta", in: "incr n\r\n", want: "ERROR\r\n"},
	{name: "incr too many tokens", in: "incr n 1 noreply x\r\n", want: "ERROR\r\n"},
	{name: "incr missing", in: "incr n1 1\r\n", want: "NOT_FOUND\r\n", codec: "<incr>"},
	{name: "incr fourth token other than noreply is ignored", in: "incr n1 1 x\r\n", want: "NOT_FOUND\r\n", codec: "<incr>"},
	{name: "incr noreply", in: "incr n1 1 noreply\r\n", want: "", codec: "<incr>"},
	{name: "incr delta not a number", in: "incr n x\r\n", want: badDelta},
	{name: "incr negative delta", in: "incr n -1\r\n", want: badDelta},
	{name: "incr delta overflow", in: "incr n 18446744073709551616\r\n", want: badDelta},
	{name: "incr delta trailing junk", in: "incr n 1x\r\n", want: badDelta},
	{name: "incr bad delta noreply", in: "incr n x noreply\r\n", want: ""},
	{name: "incr noreply as delta", in: "incr n noreply\r\n", want: ""},
	{name: "incr 251-byte key", in: "incr " + key251 + " 1\r\n", want: badFormat},
	{name: "incr", in: "set n2 0 0 2\r\n10\r\nincr n2 +1\r\nincr n2 -0\r\n", want: "STORED\r\n11\r\n11\r\n", codec: "<set><incr><incr>"},
	{name: "incr wraps", in: "set n3 0 0 2\r\n10\r\nincr n3 18446744073709551615\r\n", want: "STORED\r\n9\r\n", codec: "<set><incr>"},
	{name: "incr non-numeric value", in: "set n4 0 0 1\r\nx\r\nincr n4 1\r\n", want: "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n", codec: "<set><incr>"},
	{name: "decr stops at zero", in: "set n5 0 0 2\r\n10\r\ndecr n5 100\r\n", want: "STORED\r\n0\r\n", codec: "<set><decr>"},
	{name: "decr without delta", in: "decr n\r\n", want: "ERROR\r\n"},
	{name: "decr delta not a number", in: "decr n x\r\n", want: badDelta},

	// touch.
	{name: "touch without exptime", in: "touch t\r\n", want: "ERROR\r\n"},
	{name: "touch too many tokens", in: "touch t 1 noreply x\r\n", want: "ERROR\r\n"},
	{name: "touch missing", in: "touch t1 1\r\n", want: "NOT_FOUND\r\n", codec: "<touch>"},
	{name: "touch", in: "set t2 0 0 1\r\na\r\ntouch t2 4294967296 x\r\n", want: "STORED\r\nTOUCHED\r\n", codec: "<set><touch>"},
	{name: "touch exptime not a number", in: "touch t x\r\n", want: badExp},
	{name: "touch exptime overflow", in: "touch t 99999999999999999999\r\n", want: badExp},
	{name: "touch noreply as exptime", in: "touch t noreply\r\n", want: ""},
	{name: "touch 251-byte key", in: "touch " + key251 + " 1\r\n", want: badFormat},

	// delete.
	{name: "delete without key", in: "delete\r\n", want: "ERROR\r\n"},
	{name: "delete too many tokens", in: "delete d x y z\r\n", want: "ERROR\r\n"},
	{name: "delete missing", in: "delete d1\r\n", want: "NOT_FOUND\r\n", codec: "<delete>"},
	{name: "delete with zero hold time", in: "delete d1 0\r\n", want: "NOT_FOUND\r\n", codec: "<delete>"},
	{name: "delete with zero and noreply", in: "delete d1 0 noreply\r\n", want: "", codec: "<delete>"},
	{name: "delete noreply", in: "delete d1 noreply\r\n", want: "", codec: "<delete>"},
	{name: "delete hold time", in: "delete d1 1\r\n", want: usage},
	{name: "delete zero and junk", in: "delete d1 0 x\r\n", want: usage},
	{name: "delete hold time noreply", in: "delete d1 1 noreply\r\n", want: ""},
	{name: "delete noreply noreply", in: "delete d1 noreply noreply\r\n", want: ""},
	{name: "delete key named noreply", in: "delete noreply\r\n", want: "NOT_FOUND\r\n", codec: "<delete>"},
	{name: "delete 251-byte key", in: "delete " + key251 + "\r\n", want: badFormat},
	{name: "delete 251-byte key noreply", in: "delete " + key251 + " noreply\r\n", want: ""},
	{name: "delete", in: "set d2 0 0 1\r\na\r\ndelete d2\r\n", want: "STORED\r\nDELETED\r\n", codec: "<set><delete>"},

	// Others.
	{name: "stats reset", in: "stats reset\r\n", want: "RESET\r\n", codec: "<stats>"},
	{name: "stats unknown group", in: "stats foo\r\n", want: "ERROR\r\n", codec: "<stats>"},
	{name: "stats detail usage", in: "stats detail\r\n", want: "CLIENT_ERROR usage: stats detail on|off|dump\r\n", codec: "<stats>"},
	{name: "quit", in: "quit\r\nversion\r\n", want: "<close>", codec: "<quit>"},
	{name: "quit ignores arguments", in: "quit now\r\n", want: "<close>", codec: "<quit>"},
	{name: "verbosity without level", in: "verbosity\r\n", want: "ERROR\r\n"},
	{name: "verbosity too many tokens", in: "verbosity 1 2 3\r\n", want: "ERROR\r\n"},
	{name: "verbosity level not a number", in: "verbosity x\r\n", want: badFormat},
	{name: "verbosity negative", in: "verbosity -1\r\n", want: badFormat},
	{name: "verbosity noreply as level", in: "verbosity noreply\r\n", want: ""},
	{name: "verbosity", in: "verbosity 0\r\nverbosity 4294967296 x\r\nverbosity 0 noreply\r\n", want: "OK\r\nOK\r\n", codec: "<verbosity><verbosity><verbosity>"},
	{name: "flush_all too many tokens", in: "flush_all 0 noreply x\r\n", want: "ERROR\r\n"},
	{name: "flush_all delay not a number", in: "flush_all x\r\n", want: badExp},
	{name: "flush_all bad delay noreply", in: "flush_all x noreply\r\n", want: ""},
	{name: "flush_all", in: "flush_all\r\n", want: "OK\r\n", codec: "<flush_all>", serial: true},
	{name: "flush_all noreply", in: "flush_all noreply\r\n", want: "", codec: "<flush_all>", serial: true},
	{name: "flush_all junk after delay", in: "flush_all 0 x\r\n", want: "OK\r\n", codec: "<flush_all>", serial: true},
	{name: "flush_all negative delay", in: "flush_all -1\r\n", want: "OK\r\n", codec: "<flush_all>", serial: true},
	{name: "unsupported gat", in: "gat 0 g0\r\n", want: "END\r\n", codec: "<unsupported>"},
	{name: "unsupported meta no-op", in: "mn\r\n", want: "MN\r\n", codec: "<unsupported>"},
	{name: "unknown two-letter m command", in: "mz\r\n", want: "ERROR\r\n"},
}

// renderCodec is the codec's view of in; see behaviour. With quiet, a
// parsed request with noreply renders as nothing, like memcached's reply.
func renderCodec(in []byte, quiet bool) string {
	var sb bytes.Buffer
	flushed := 0 // memcached sends its queued replies after a get
	for len(in) > 0 {
		req, n, err := ParseRequest(in)
		var e *Error
		switch {
		case err == ErrIncomplete:
			if n != 0 {
				return sb.String() + "<incomplete with n != 0>"
			}
			return sb.String() + "<incomplete>"
		case errors.As(err, &e):
			if e.Close {
				return sb.String() + "<close>"
			}
			if e.DropPending {
				sb.Truncate(flushed)
			}
			if e.Unsupported {
				sb.WriteString("<unsupported>")
			} else {
				sb.Write(e.Reply())
			}
			in = in[min(len(in), n+e.Swallow):]
		case err != nil:
			return sb.String() + "<unexpected error " + err.Error() + ">"
		default:
			if !quiet || !req.NoReply {
				sb.WriteString("<" + req.Command.String() + ">")
			}
			if req.Command == CmdGet || req.Command == CmdGets {
				flushed = sb.Len()
			}
			if req.Command == CmdQuit {
				return sb.String()
			}
			in = in[n:]
		}
	}
	return sb.String()
}

func TestBehaviourCodec(t *testing.T) {
	for _, tc := range behaviour {
		want := tc.codec
		if want == "" {
			want = tc.want
		}
		if got := renderCodec([]byte(tc.in), false); got != want {
			t.Errorf("%s: %.80q:\n got %q\nwant %q", tc.name, tc.in, got, want)
		}
	}
}

func TestBehaviourMemcached(t *testing.T) {
	addr := startMemcached(t)
	// Each exchange waits for memcached to go quiet, so run many at once
	// (t.Parallel would be bounded by GOMAXPROCS).
	got := make([]string, len(behaviour))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, tc := range behaviour {
		if tc.serial {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			got[i] = rawExchange(addr, []byte(tc.in), 150*time.Millisecond)
		}()
	}
	wg.Wait()
	for i, tc := range behaviour {
		if tc.serial {
			got[i] = rawExchange(addr, []byte(tc.in), 150*time.Millisecond)
		}
		if got[i] != tc.want {
			t.Errorf("%s: memcached replied to %.80q:\n got %q\nwant %q", tc.name, tc.in, got[i], tc.want)
		}
	}
}
