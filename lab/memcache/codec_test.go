package memcache

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseRequestFields(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	keys := func(ks ...string) (out [][]byte) {
		for _, k := range ks {
			out = append(out, b(k))
		}
		return out
	}
	many := strings.Repeat("k ", 30)
	for _, tc := range []struct {
		in   string
		want Request
		n    int // 0: all of in
	}{
		{in: "get a\r\n", want: Request{Command: CmdGet, Keys: keys("a")}},
		{in: "gets a bb ccc\r\n", want: Request{Command: CmdGets, Keys: keys("a", "bb", "ccc")}},
		{in: "get " + many + "\r\n", want: Request{Command: CmdGet, Keys: keys(strings.Fields(many)...)}},
		{in: "   get  a\tb  \r\n", want: Request{Command: CmdGet, Keys: keys("a\tb")}},
		{in: "get a\r\r\n", want: Request{Command: CmdGet, Keys: keys("a\r")}},
		{in: "get a\nget b\n", want: Request{Command: CmdGet, Keys: keys("a")}, n: 6},
		{in: "set k 1 2 3 noreply\r\nabc\r\n", want: Request{Command: CmdSet, Key: b("k"), Flags: 1, Exptime: 2, Value: b("abc"), NoReply: true}},
		{in: "add k 4294967296 -7 1 x\r\na\r\nrest", want: Request{Command: CmdAdd, Key: b("k"), Exptime: -7, Value: b("a")}, n: 28},
		{in: "replace k 0 4294967297 0\r\n\r\n", want: Request{Command: CmdReplace, Key: b("k"), Exptime: 1, Value: b("")}},
		{in: "append k 0 0 2\r\n\r\n\r\n", want: Request{Command: CmdAppend, Key: b("k"), Value: b("\r\n")}},
		{in: "prepend k 0 0 1\r\nx\r\n", want: Request{Command: CmdPrepend, Key: b("k"), Value: b("x")}},
		{in: "cas k 5 0 1 18446744073709551615 noreply\r\nx\r\n", want: Request{Command: CmdCAS, Key: b("k"), Flags: 5, Value: b("x"), CAS: 1<<64 - 1, NoReply: true}},
		{in: "delete k\r\n", want: Request{Command: CmdDelete, Key: b("k")}},
		{in: "delete k 0 noreply\r\n", want: Request{Command: CmdDelete, Key: b("k"), NoReply: true}},
		{in: "delete noreply\r\n", want: Request{Command: CmdDelete, Key: b("noreply")}},
		{in: "incr k 18446744073709551615\r\n", want: Request{Command: CmdIncr, Key: b("k"), Delta: 1<<64 - 1}},
		{in: "decr k -0 noreply\r\n", want: Request{Command: CmdDecr, Key: b("k"), NoReply: true}},
		{in: "touch k -1\r\n", want: Request{Command: CmdTouch, Key: b("k"), Exptime: -1}},
		{in: "stats\r\n", want: Request{Command: CmdStats}},
		{in: "stats slabs\r\n", want: Request{Command: CmdStats, Args: []string{"slabs"}}},
		{in: "flush_all\r\n", want: Request{Command: CmdFlushAll}},
		{in: "flush_all 10 noreply\r\n", want: Request{Command: CmdFlushAll, Exptime: 10, NoReply: true}},
		{in: "flush_all noreply\r\n", want: Request{Command: CmdFlushAll, NoReply: true}},
		{in: "version\r\n", want: Request{Command: CmdVersion}},
		{in: "verbosity 4294967297 noreply\r\n", want: Request{Command: CmdVerbosity, Level: 1, NoReply: true}},
		{in: "quit\r\n", want: Request{Command: CmdQuit}},
	} {
		got, n, err := ParseRequest([]byte(tc.in))
		wantN := tc.n
		if wantN == 0 {
			wantN = len(tc.in)
		}
		if err != nil || n != wantN || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseRequest(%q) = %+v, %d, %v; want %+v, %d", tc.in, got, n, err, tc.want, wantN)
			continue
		}
		// Every proper prefix needs more bytes.
		for i := 0; i < n; i++ {
			if _, m, err := ParseRequest([]byte(tc.in[:i])); err != ErrIncomplete || m != 0 {
				t.Errorf("ParseRequest(%q) = %d, %v; want 0, ErrIncomplete", tc.in[:i], m, err)
				break
			}
		}
		// AppendRequest writes a request that parses back the same.
		wire := AppendRequest(nil, got)
		again, m, err := ParseRequest(wire)
		if err != nil || m != len(wire) || !reflect.DeepEqual(again, got) {
			t.Errorf("round trip of %q via %q = %+v, %d, %v", tc.in, wire, again, m, err)
		}
	}
}

func TestParseRequestErrorDetails(t *testing.T) {
	in := []byte("set k 0 0 1 noreply\r\nab\r\n")
	_, n, err := ParseRequest(in)
	var e *Error
	if !errors.As(err, &e) || !e.Silent || e.Reply() != nil || n != len("set k 0 0 1 noreply\r\nab\r") {
		t.Errorf("bad chunk noreply: n=%d err=%#v", n, err)
	}
	_, _, err = ParseRequest([]byte("gat 0 k\r\n"))
	if !errors.As(err, &e) || !e.Unsupported || string(e.Reply()) != "ERROR\r\n" {
		t.Errorf("gat: %#v", err)
	}
	_, n, err = ParseRequest(bytes.Repeat([]byte("x"), 3000))
	if !errors.As(err, &e) || !e.Close || e.Reply() != nil || n != 3000 {
		t.Errorf("long line: n=%d err=%#v", n, err)
	}
}

// TestTooLarge checks Parser.MaxItemSize against memcached's own limit: a
// too-large data block is swallowed, and the reply follows it.
func TestTooLarge(t *testing.T) {
	fits := func(key string, flags uint32, n int) bool {
		in := fmt.Sprintf("set %s %d 0 %d\r\n%s\r\n", key, flags, n, strings.Repeat("v", n))
		_, _, err := Parser{MaxItemSize: 1 << 20}.Parse([]byte(in))
		return err == nil
	}
	// The longest values memcached 1.6.18 -I 1m takes, found by bisection.
	limits := []struct {
		key   string
		flags uint32
		max   int
	}{
		{"k", 0, 1048516}, {"k", 1, 1048512}, {"kk", 0, 1048515},
		{strings.Repeat("k", 10), 0, 1048507}, {key250, 0, 1048267}, {key250, 5, 1048263},
	}
	for _, tc := range limits {
		if !fits(tc.key, tc.flags, tc.max) || fits(tc.key, tc.flags, tc.max+1) {
			t.Errorf("key of %d bytes, flags %d: limit is not %d", len(tc.key), tc.flags, tc.max)
		}
	}

	const size = 2000000
	data := strings.Repeat("a", size)
	in := "set big 0 0 2000000\r\n" + data + "\r\nget big\r\n"
	p := Parser{MaxItemSize: 1 << 20}
	_, n, err := p.Parse([]byte(in))
	var e *Error
	if !errors.As(err, &e) || e.Msg != "SERVER_ERROR object too large for cache" || e.Swallow != size+2 || n != len("set big 0 0 2000000\r\n") {
		t.Fatalf("Parse = %d, %#v", n, err)
	}
	if _, _, err := p.Parse([]byte("set big 0 0 1048577 noreply\r\n")); !errors.As(err, &e) || !e.Silent {
		t.Fatalf("noreply: %#v", err)
	}
	if _, _, err := p.Parse([]byte("set big 0 0 1048577\r\n")); !errors.As(err, &e) || e.Swallow != 1048579 {
		t.Fatalf("before data: %#v", err)
	}

	addr := startMemcached(t)
	c, err := DialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range limits {
		val := bytes.Repeat([]byte("v"), tc.max+1)
		err1 := c.Set(t.Context(), Item{Key: tc.key, Flags: tc.flags, Value: val[:tc.max]})
		err2 := c.Set(t.Context(), Item{Key: tc.key, Flags: tc.flags, Value: val})
		var se *ServerError
		if err1 != nil || !errors.As(err2, &se) || se.Line != "SERVER_ERROR object too large for cache" {
			t.Errorf("memcached, key of %d bytes, flags %d: %v, %v", len(tc.key), tc.flags, err1, err2)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{in, "SERVER_ERROR object too large for cache\r\nEND\r\n"},
		{"set big 0 0 2000000\r\n" + data + "x\r\nget big\r\n", "SERVER_ERROR object too large for cache\r\nERROR\r\nEND\r\n"},
		{"set big 0 0 2000000 noreply\r\n" + data + "\r\nget big\r\n", "END\r\n"},
		// A set that is too large deletes the key; add and append do not.
		{"set old 0 0 1\r\nx\r\nset old 0 0 2000000\r\n" + data + "\r\nget old\r\n", "STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n"},
		{"set old3 0 0 1\r\nx\r\nreplace old3 0 0 2000000\r\n" + data + "\r\nget old3\r\n", "STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE old3 0 1\r\nx\r\nEND\r\n"},
		{"set old4 0 0 1\r\nx\r\ncas old4 0 0 2000000 1\r\n" + data + "\r\nget old4\r\n", "STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE old4 0 1\r\nx\r\nEND\r\n"},
		{"set old2 0 0 1\r\nx\r\nappend old2 0 0 2000000\r\n" + data + "\r\nget old2\r\n", "STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE old2 0 1\r\nx\r\nEND\r\n"},
	} {
		if got := rawExchange(addr, []byte(tc.in), 300e6); got != tc.want {
			t.Errorf("memcached: got %q, want %q", got, tc.want)
		}
	}
}

func TestFrame(t *testing.T) {
	h := Header{RequestID: 0x1234, Seq: 2, Total: 3, Reserved: 0xbeef}
	wire := AppendHeader(nil, h)
	if !bytes.Equal(wire, []byte{0x12, 0x34, 0, 2, 0, 3, 0xbe, 0xef}) {
		t.Fatalf("AppendHeader = % x", wire)
	}
	if got, err := ParseHeader(wire); err != nil || got != h {
		t.Fatalf("ParseHeader = %+v, %v", got, err)
	}
	if _, err := ParseHeader(wire[:7]); err != ErrShortHeader {
		t.Fatalf("short: %v", err)
	}
	for _, size := range []int{0, 1, 1392, 1393, 3000} {
		msg := bytes.Repeat([]byte{'x'}, size)
		ds := AppendDatagrams(nil, 7, msg)
		var joined []byte
		for i, d := range ds {
			h, _ := ParseHeader(d)
			if len(d) > MaxDatagram || h.RequestID != 7 || int(h.Seq) != i || int(h.Total) != len(ds) {
				t.Errorf("size %d datagram %d: len %d header %+v", size, i, len(d), h)
			}
			joined = append(joined, d[HeaderLen:]...)
		}
		if want := max(1, (size+1391)/1392); len(ds) != want || !bytes.Equal(joined, msg) {
			t.Errorf("size %d: %d datagrams, want %d", size, len(ds), want)
		}
	}
}

func TestReplyLen(t *testing.T) {
	val := "VALUE k 0 5\r\nEND\r\n\r\n" // data that looks like END
	for _, tc := range []struct {
		cmd  Command
		in   string
		n    int
		done bool
	}{
		{CmdGet, "END\r\n", 5, true},
		{CmdGet, "END\r", 0, false},
		{CmdGet, val + "END\r\nxx", len(val) + 5, true},
		{CmdGet, val, 0, false},
		{CmdGet, "VALUE k 0 5\r\nEND\r\n", 0, false},
		{CmdGets, "VALUE k 0 1 99\r\na\r\nVALUE j 3 0 100\r\n\r\nEND\r\n", 43, true},
		{CmdGet, "CLIENT_ERROR bad command line format\r\n", 38, true},
		{CmdGet, "SERVER_ERROR out of memory\r\nEND\r\n", 28, true},
		{CmdStats, "STAT a 1\r\nSTAT b 2\r\nEND\r\n", 25, true},
		{CmdStats, "STAT a 1\r\n", 0, false},
		{CmdStats, "RESET\r\n", 7, true},
		{CmdStats, "PREFIX a get 1\r\nEND\r\n", 21, true},
		{CmdSet, "STORED\r\nSTORED\r\n", 8, true},
		{CmdIncr, "12", 0, false},
		{CmdUnknown, "ERROR\r\n", 7, true},
		{CmdQuit, "", 0, true},
	} {
		n, done := ReplyLen(tc.cmd, []byte(tc.in))
		if n != tc.n || done != tc.done {
			t.Errorf("ReplyLen(%v, %q) = %d, %v; want %d, %v", tc.cmd, tc.in, n, done, tc.n, tc.done)
		}
	}
}

func TestParseItemsAndNormalizeCAS(t *testing.T) {
	reply := []byte("VALUE a 1 2 900\r\nhi\r\nVALUE b 0 0 77\r\n\r\nVALUE a 1 2 900\r\nhi\r\nEND\r\n")
	items, err := ParseItems(reply)
	want := []Item{{Key: "a", Flags: 1, Value: []byte("hi"), CAS: 900}, {Key: "b", Value: []byte{}, CAS: 77}, {Key: "a", Flags: 1, Value: []byte("hi"), CAS: 900}}
	if err != nil || !reflect.DeepEqual(items, want) {
		t.Errorf("ParseItems = %+v, %v", items, err)
	}
	norm := string(NormalizeCAS(reply))
	if norm != "VALUE a 1 2 1\r\nhi\r\nVALUE b 0 0 2\r\n\r\nVALUE a 1 2 1\r\nhi\r\nEND\r\n" {
		t.Errorf("NormalizeCAS = %q", norm)
	}
	if got := string(NormalizeCAS([]byte("VALUE a 0 1\r\nx\r\nEND\r\n"))); got != "VALUE a 0 1\r\nx\r\nEND\r\n" {
		t.Errorf("NormalizeCAS without cas = %q", got)
	}
	if _, err := ParseItems([]byte("CLIENT_ERROR bad command line format\r\n")); err == nil {
		t.Error("ParseItems of an error reply: no error")
	}
	if v, err := ParseValueLine([]byte("VALUE k 4294967295 10 18446744073709551615\r\n")); err != nil || v.Flags != 1<<32-1 || v.Bytes != 10 || v.CAS != 1<<64-1 || !v.HasCAS {
		t.Errorf("ParseValueLine = %+v, %v", v, err)
	}
}

func TestReassembler(t *testing.T) {
	var r Reassembler
	r.Expect(5, CmdGet)
	big := "VALUE b 0 3000\r\n" + strings.Repeat("x", 3000) + "\r\n"
	ds := AppendDatagrams(nil, 5, []byte(big))
	feed := [][]byte{}
	feed = AppendDatagrams(feed, 5, []byte("VALUE a 0 1\r\n1\r\n"))
	feed = AppendDatagrams(feed, 9, []byte("END\r\n")) // another request
	feed = append(feed, ds[1], ds[0], ds[2])           // out of order within a message
	feed = append(feed, []byte{1, 2, 3})               // runt
	for i, d := range feed {
		if _, _, done := r.Add(d); done {
			t.Fatalf("done early at datagram %d", i)
		}
	}
	id, reply, done := r.Add(AppendDatagrams(nil, 5, []byte("END\r\n"))[0])
	want := "VALUE a 0 1\r\n1\r\n" + big + "END\r\n"
	if id != 5 || !done || string(reply) != want || r.Pending() != 0 {
		t.Fatalf("Add = %d, %.40q, %v", id, reply, done)
	}
	// Several requests in one message: both replies are collected.
	r.Expect(6, ExpectedReplies([]byte("set k 0 0 1 noreply\r\na\r\nversion\r\nincr k 1\r\n"))...)
	if _, _, done := r.Add(AppendDatagrams(nil, 6, []byte("VERSION 1\r\n"))[0]); done {
		t.Fatal("done after the first of two replies")
	}
	if _, reply, done := r.Add(AppendDatagrams(nil, 6, []byte("2\r\n"))[0]); !done || string(reply) != "VERSION 1\r\n2\r\n" {
		t.Fatalf("two replies: %q %v", reply, done)
	}
}

func TestExpectedReplies(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Command
	}{
		{"get a\r\n", []Command{CmdGet}},
		{"set a 0 0 1 noreply\r\na\r\n", nil},
		{"set a 0 0\r\na\r\n", []Command{CmdUnknown, CmdUnknown}},
		{"incr a x noreply\r\nstats\r\nquit\r\nversion\r\n", []Command{CmdStats}},
		{"version\r\nget a", []Command{CmdVersion}},
		{"version\r\nget a " + key251 + "\r\nversion\r\n", []Command{CmdUnknown, CmdVersion}},
		{"get a\r\nversion\r\ngets " + key251 + "\r\n", []Command{CmdGet, CmdUnknown}},
	} {
		if got := ExpectedReplies([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ExpectedReplies(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestIsErrorReply(t *testing.T) {
	for r, want := range map[string]bool{
		"ERROR\r\n": true, "CLIENT_ERROR bad data chunk\r\n": true, "SERVER_ERROR out of memory\r\n": true,
		"ERROR": true, "ERRORS\r\n": false, "END\r\n": false, "VALUE k 0 5\r\nERROR\r\nEND\r\n": false,
		"CLIENT_ERROR\r\n": false, "": false, "STORED\r\n": false,
	} {
		if got := IsErrorReply([]byte(r)); got != want {
			t.Errorf("IsErrorReply(%q) = %v, want %v", r, got, want)
		}
	}
}
