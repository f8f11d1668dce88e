package workshop

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
)

// Lesson 2's counters, after lesson 1's, and its longest key (KEY_MAX in
// the lessons' C): memcached's, as the codec has it.
const (
	cGet   = 2
	cSet   = 3
	cOther = 4
	keyMax = memcache.MaxKeyLen
)

// Lesson 2's checks.
const (
	CheckParseGet   = "a get is counted in counters[C_GET]"
	CheckParseKey   = "a get's key is recorded in last_key"
	CheckParseSet   = "a set is counted in counters[C_SET]"
	CheckParseOther = "anything else to port 11211 is counted in counters[C_OTHER], not as a get"
	CheckParseVeth  = "on a veth pair: a get from a client is parsed, and still reaches the server"
)

// lesson1Checks are lesson 1's checks that every later lesson's program
// still passes: it still counts.
var lesson1Checks = []Check{
	{Name: CheckCountEvery, Run: countEvery},
	{Name: CheckCountMemcached, Run: countMemcached},
}

// lesson2Checks are lesson 2's checks of the parser, which lesson 3's
// program, the parser grown a reply, still passes.
var lesson2Checks = []Check{
	{Name: CheckParseGet, Run: parseGet,
		Hint: "read_key() returns -1 until you write it (TODO 1), so every get is counted as other"},
	{Name: CheckParseKey, Run: parseKey,
		Hint: "in read_key(): for (n = 0; n <= KEY_MAX; n++) { if ((void *)(p + n + 1) > data_end) return -1; ... } — the bound is a constant, the bounds check is inside the loop; then in xdp_prog *last = *k"},
	{Name: CheckParseSet, Run: parseSet},
	{Name: CheckParseOther, Run: parseOther,
		Hint: "\"gets foo\" starts with \"get\": compare four bytes, \"get \", space included; a get has exactly one key, ended by \"\\r\\n\" at the datagram's end"},
}

func init() {
	checks := []Check{{Name: CheckCountPass, Run: countPass}}
	checks = append(checks, lesson1Checks...)
	checks = append(checks, lesson2Checks...)
	checks = append(checks, Check{Name: CheckParseVeth, Run: parseVeth})
	register(&Lesson{N: 2, Slug: "parse", Title: "parse a memcached UDP request", Program: "xdp_prog", Checks: checks})
}

// counts reads lesson 2's counters: get, set, other.
func (e *Env) counts() (get, set, other uint64, err error) {
	for i, p := range []*uint64{&get, &set, &other} {
		if *p, err = e.Counter("counters", uint32(cGet+i)); err != nil {
			return
		}
	}
	return
}

// lastKey reads last_key: struct key { __u32 len; char data[KEY_MAX]; }.
func (e *Env) lastKey() (string, error) {
	m, err := e.Map("last_key")
	if err != nil {
		return "", err
	}
	b := make([]byte, m.ValueSize())
	if err := m.Lookup(uint32(0), &b); err != nil {
		return "", err
	}
	if len(b) < 4+keyMax {
		return "", fmt.Errorf("last_key's value is %d bytes, want struct key (%d)", len(b), 4+keyMax)
	}
	n := binary.NativeEndian.Uint32(b)
	if n > keyMax {
		return "", fmt.Errorf("last_key.len is %d, longer than KEY_MAX (%d)", n, keyMax)
	}
	return string(b[4 : 4+n]), nil
}

// runAll runs requests (payloads) through the program.
func (e *Env) runAll(reqs ...string) error {
	for i, r := range reqs {
		if _, _, err := e.Run(Request(uint16(i), r).Frame()); err != nil {
			return err
		}
	}
	return nil
}

func parseGet(e *Env) error {
	if err := e.ResetCounters("counters"); err != nil {
		return err
	}
	if err := e.runAll("get foo\r\n", "get foo\r\n", "get bar\r\n"); err != nil {
		return err
	}
	get, set, other, err := e.counts()
	if err != nil {
		return err
	}
	if get != 3 || set != 0 || other != 0 {
		return fmt.Errorf("after 3 requests \"get foo\\r\\n\" (or bar) the counters are get %d, set %d, other %d; want 3, 0, 0", get, set, other)
	}
	return nil
}

func parseKey(e *Env) error {
	long := strings.Repeat("k", keyMax)
	for _, k := range []string{"hello", "k", "user:1234", long} {
		if err := e.runAll("get " + k + "\r\n"); err != nil {
			return err
		}
		got, err := e.lastKey()
		if err != nil {
			return err
		}
		if got != k {
			return fmt.Errorf("after \"get %s\\r\\n\" last_key holds %q (%d bytes), want %q (%d bytes)", short(k), short(got), len(got), short(k), len(k))
		}
	}
	return nil
}

// short abbreviates a long key in a message.
func short(s string) string {
	if len(s) > 20 {
		return fmt.Sprintf("%s…(%d bytes)", s[:8], len(s))
	}
	return s
}

func parseSet(e *Env) error {
	if err := e.ResetCounters("counters"); err != nil {
		return err
	}
	if err := e.runAll("set foo 0 0 3\r\nbar\r\n", "set k 5 0 1 noreply\r\nv\r\n"); err != nil {
		return err
	}
	get, set, other, err := e.counts()
	if err != nil {
		return err
	}
	if set != 2 || get != 0 || other != 0 {
		return fmt.Errorf("after 2 set requests the counters are get %d, set %d, other %d; want 0, 2, 0", get, set, other)
	}
	return nil
}

// notGets are requests a program must not take for a one-key get.
var notGets = map[string]string{
	"delete foo\r\n":         "a delete",
	"gets foo\r\n":           "a gets (it starts with \"get\")",
	"get\r\n":                "a get without a key",
	"get \r\n":               "a get with an empty key",
	"get a b\r\n":            "a get of two keys",
	"get foo":                "a get without \"\\r\\n\"",
	"get foo\r\nget bar\r\n": "two requests in one datagram",
	"get " + strings.Repeat("x", keyMax+1) + "\r\n": fmt.Sprintf("a get of a %d-byte key (memcached's limit is %d)", keyMax+1, keyMax),
	"":            "an empty request",
	"GET foo\r\n": "GET in capitals (memcached's commands are lower case)",
}

func parseOther(e *Env) error {
	if err := e.runAll("get before\r\n"); err != nil {
		return err
	}
	for req, what := range notGets {
		if err := e.ResetCounters("counters"); err != nil {
			return err
		}
		if err := e.runAll(req); err != nil {
			return err
		}
		get, set, other, err := e.counts()
		if err != nil {
			return err
		}
		if get != 0 || set != 0 || other != 1 {
			return fmt.Errorf("%s, %q, made the counters get %d, set %d, other %d; want 0, 0, 1", what, short(req), get, set, other)
		}
	}
	multi := Request(7, "get foo\r\n")
	multi.Total = 2
	for what, f := range map[string][]byte{
		"the first of 2 datagrams of a request":             multi.Frame(),
		"a datagram shorter than memcached's 8-byte header": udpTo(11211)[:frame.EthLen+frame.IPv4Len+frame.UDPLen+4],
	} {
		if err := e.ResetCounters("counters"); err != nil {
			return err
		}
		if _, _, err := e.Run(f); err != nil {
			return err
		}
		if get, set, other, err := e.counts(); err != nil {
			return err
		} else if get != 0 || set != 0 || other != 1 {
			return fmt.Errorf("%s made the counters get %d, set %d, other %d; want 0, 0, 1", what, get, set, other)
		}
	}
	if k, err := e.lastKey(); err != nil {
		return err
	} else if k != "before" {
		return fmt.Errorf("requests that are no one-key get changed last_key from \"before\" to %q: record a key only once the whole get is checked", short(k))
	}
	return nil
}

func parseVeth(e *Env) error {
	s, err := e.counterSockets()
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Send(9, "get from-the-client\r\n"); err != nil {
		return err
	}
	if s.Received(1, 3*time.Second) != 1 {
		return fmt.Errorf("the server socket got no datagram: the program must pass the get on")
	}
	if get, _, _, err := e.counts(); err != nil {
		return err
	} else if get != 1 {
		return fmt.Errorf("counters[C_GET] is %d after one get over the veth pair", get)
	}
	if k, err := e.lastKey(); err != nil {
		return err
	} else if k != "from-the-client" {
		return fmt.Errorf("last_key is %q after \"get from-the-client\" over the veth pair", short(k))
	}
	return nil
}
