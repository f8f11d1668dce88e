package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xdplab/xdplab/lab/internal/frame"
	"github.com/xdplab/xdplab/lab/memcache"
)

// fuzzPair is two stores in the same state: xdp is run through the XDP
// program, model through the Go engine alone, which serves as the model of
// what memcached replies.
type fuzzPair struct {
	xdp, model *Server
}

var (
	fuzzOnce  sync.Once
	fuzzPairV *fuzzPair
	fuzzErr   error
)

// A small slot, so that short fuzz inputs reach values the kernel cannot
// hold.
var fuzzCfg = Config{MaxValue: 64, Entries: 1024}

// The items every input starts from: numbers of every shape incr meets, a
// value in the slow path, an expired one.
var fuzzSeed = []string{
	"set a 1 0 1\r\n1\r\n",
	"set n 0 0 2\r\n42\r\n",
	"set pad 0 0 5\r\n12   \r\n",
	"set max 0 0 20\r\n18446744073709551615\r\n",
	"set neg 0 0 2\r\n-5\r\n",
	"set s 7 0 11\r\nsmall value\r\n",
	"set big 3 0 100\r\n" + string(bytes.Repeat([]byte("b"), 100)) + "\r\n",
	"set exp 0 -1 1\r\nx\r\n",
	"set far 0 2000000000 3\r\nfar\r\n",
}

func fuzzStores(t testing.TB) *fuzzPair {
	fuzzOnce.Do(func() {
		var objs [2]*Objects
		for i := range objs {
			if objs[i], fuzzErr = Load(fuzzCfg); fuzzErr != nil {
				return
			}
			if fuzzErr = objs[i].SetAddrs(testServerAddrs); fuzzErr != nil {
				return
			}
		}
		// Loaded once per fuzz worker process and never closed: the process
		// ends with the worker.
		fuzzPairV = &fuzzPair{xdp: NewServer(objs[0]), model: NewServer(objs[1])}
	})
	if fuzzErr != nil {
		t.Fatal(fuzzErr)
	}
	return fuzzPairV
}

// reset empties both stores and loads the seed items through each engine.
func (p *fuzzPair) reset(t testing.TB) {
	for _, s := range []*Server{p.xdp, p.model} {
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, r := range fuzzSeed {
			if got, _ := s.execStream([]byte(r), math.MaxInt); string(got) != "STORED\r\n" {
				t.Fatalf("seed %q: %q", r, got)
			}
		}
	}
}

// fuzzItem is what a store holds for a key.
type fuzzItem struct {
	live    bool
	cas     uint64
	exptime uint64
	flags   uint32
	data    string
}

func (s *Server) itemOf(t testing.TB, key []byte) fuzzItem {
	now := uint64(time.Now().Unix())
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	it, ok, err := s.g.get(key, now)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return fuzzItem{}
	}
	return fuzzItem{live: true, cas: it.cas, exptime: it.exptime, flags: it.flags, data: string(it.data)}
}

// fuzzKeys are the seed keys and any key the payload names.
func fuzzKeys(payload []byte) [][]byte {
	keys := [][]byte{}
	for _, r := range fuzzSeed {
		k, _, _ := bytes.Cut([]byte(r[4:]), []byte(" "))
		keys = append(keys, k)
	}
	for b := payload; len(b) > 0; {
		req, n, err := memcache.ParseRequest(b)
		if err == nil {
			keys = append(keys, req.Keys...)
			if req.Key != nil {
				keys = append(keys, req.Key)
			}
		}
		if n <= 0 || n > len(b) {
			break
		}
		b = b[n:]
	}
	var out [][]byte
	for _, k := range keys {
		if len(k) > 0 && len(k) <= memcache.MaxKeyLen {
			out = append(out, k)
		}
	}
	return out
}

func (s *Server) snapshot(t testing.TB, keys [][]byte) []fuzzItem {
	var out []fuzzItem
	for _, k := range keys {
		out = append(out, s.itemOf(t, k))
	}
	return out
}

// fuzzFrame builds the input frame. cut drops bytes off its end (length
// fields still claiming them); ulenDelta misstates the UDP length.
func fuzzFrame(o *Objects, v6 bool, id, seq, total, reserved uint16, payload []byte, cut uint8, ulenDelta int8) []byte {
	src, dst := testClient, testServerPort(o)
	if v6 {
		src = netip.MustParseAddrPort("[fd00::1]:40000")
		dst = netip.AddrPortFrom(netip.MustParseAddr("fd00::2"), o.cfg.Port)
	}
	b := frame.Datagram{Src: src, Dst: dst, ID: id, Seq: seq, Total: total, Reserved: reserved, Payload: payload}.Frame()
	off := frame.EthLen + frame.IPv4Len + 4
	if v6 {
		off = frame.EthLen + frame.IPv6Len + 4
	}
	if total == 0 {
		// Frame() makes a zero total 1; memcached drops 0. The checksum
		// goes stale, which XDP does not check.
		binary.BigEndian.PutUint16(b[off+8:], 0)
	}
	if ulenDelta != 0 {
		binary.BigEndian.PutUint16(b[off:], uint16(int(binary.BigEndian.Uint16(b[off:]))+int(ulenDelta)))
	}
	return b[:len(b)-min(int(cut), len(b))]
}

// FuzzXDP runs frames through the XDP program and holds it to the Go engine
// as the model: XDP must not fail or emit a malformed frame; what it
// answers (XDP_TX) must be what the engine answers for the same payload on
// the same items, with the same effect; what it drops must be a noreply
// request the engine also answers with nothing; and what it passes up must
// leave the store as it was.
func FuzzXDP(f *testing.F) {
	add := func(payload string) {
		for _, v6 := range []bool{false, true} {
			f.Add(v6, uint16(1), uint16(0), uint16(1), uint16(0), []byte(payload), uint8(0), int8(0))
		}
	}
	for _, r := range []string{
		"get a\r\n", "gets a n s\r\n", "get big\r\n", "get exp\r\n", "get nothere a\r\n",
		"set a 0 0 1\r\nz\r\n", "set new 5 100 3\r\nabc\r\n", "set e 0 -1 1\r\nz\r\n", "set a 0 0 1 noreply\r\nz\r\n",
		"add a 0 0 1\r\nz\r\n", "add new 0 0 1\r\nz\r\n", "replace a 0 0 1\r\nz\r\n", "replace nothere 0 0 1\r\nz\r\n",
		"append s 0 0 3\r\nxyz\r\n", "prepend s 0 0 3\r\nxyz\r\n", "append big 0 0 1\r\nx\r\n", "append s 0 0 60\r\n" + string(bytes.Repeat([]byte("x"), 60)) + "\r\n",
		"cas a 0 0 1 1\r\nz\r\n", "cas a 0 0 1 $cas\r\nz\r\n", "cas a 0 0 1 $cas noreply\r\nz\r\n", "cas nothere 0 0 1 1\r\nz\r\n",
		"delete a\r\n", "delete nothere\r\n", "delete a noreply\r\n", "delete big\r\n",
		"incr n 1\r\n", "decr n 100\r\n", "incr max 1\r\n", "incr pad 5\r\n", "decr pad 12\r\n", "incr neg 1\r\n", "incr s 1\r\n", "incr n 1 noreply\r\n",
		"touch a 100\r\n", "touch nothere 0\r\n", "touch exp 0\r\n", "touch far -1\r\n",
		"get a\r\nget n\r\n", "bogus\r\n", "version\r\n",
	} {
		add(r)
	}
	f.Add(false, uint16(1), uint16(0), uint16(2), uint16(0), []byte("get a\r\n"), uint8(0), int8(0))
	f.Add(false, uint16(1), uint16(3), uint16(1), uint16(0), []byte("get a\r\n"), uint8(0), int8(0))
	f.Add(false, uint16(1), uint16(0), uint16(1), uint16(0), []byte("get a\r\n"), uint8(3), int8(0))
	f.Add(true, uint16(1), uint16(0), uint16(1), uint16(0), []byte("set a 0 0 1\r\nz\r\n"), uint8(0), int8(-3))
	f.Add(false, uint16(1), uint16(0), uint16(1), uint16(0), []byte("get a\r\n"), uint8(0), int8(5))

	f.Fuzz(checkXDP)
}

// FuzzXDPCommand builds requests from parts ("<cmd> <key> <a> <b> <c>
// [noreply]\r\n[<value>\r\n]"), so that more of them are ones XDP
// answers, and checks them as FuzzXDP does.
func FuzzXDPCommand(f *testing.F) {
	for _, c := range []struct {
		cmd     uint8
		key     string
		a, b, c string
		value   string
		noreply bool
	}{
		{0, "a", "", "", "", "", false}, {1, "a", "n", "s", "", "", false}, {2, "a", "0", "0", "", "z", false},
		{2, "new", "5", "100", "", "abc", true}, {3, "a", "0", "-1", "", "", false}, {4, "s", "0", "0", "", "xyz", false},
		{5, "s", "0", "0", "", "xyz", false}, {6, "a", "0", "0", "$cas", "z", false}, {7, "a", "", "", "", "", false},
		{8, "n", "5", "", "", "", false}, {9, "pad", "3", "", "", "", true}, {10, "a", "100", "", "", "", false},
		{8, "max", "1", "", "", "", false}, {9, "n", "18446744073709551615", "", "", "", false},
	} {
		for _, v6 := range []bool{false, true} {
			f.Add(v6, c.cmd, c.key, c.a, c.b, c.c, []byte(c.value), c.noreply)
		}
	}
	cmds := []string{"get", "gets", "set", "add", "replace", "append", "cas", "delete", "incr", "decr", "touch", "prepend"}
	f.Fuzz(func(t *testing.T, v6 bool, cmd uint8, key, a, b, c string, value []byte, noreply bool) {
		name := cmds[int(cmd)%len(cmds)]
		line := name + " " + key
		switch name {
		case "get", "gets", "incr", "decr", "touch", "delete":
			for _, x := range []string{a, b, c} {
				if x != "" {
					line += " " + x
				}
			}
		default: // storage: key flags exptime bytes [cas]
			line += " " + a + " " + b + " " + strconv.Itoa(len(value))
			if name == "cas" || c != "" {
				line += " " + c
			}
		}
		if noreply {
			line += " noreply"
		}
		payload := []byte(line + "\r\n")
		if name != "get" && name != "gets" && name != "incr" && name != "decr" && name != "touch" && name != "delete" {
			payload = append(append(payload, value...), "\r\n"...)
		}
		checkXDP(t, v6, 1, 0, 1, 0, payload, 0, 0)
	})
}

// checkXDP is FuzzXDP's check of one frame.
func checkXDP(t *testing.T, v6 bool, id, seq, total, reserved uint16, payload []byte, cut uint8, ulenDelta int8) {
	p := fuzzStores(t)
	o := p.xdp.o
	if o.token != 0 && reserved == o.token {
		t.Skip("the slow path's own marker")
	}
	p.reset(t)
	// "$cas" stands for the unique "a" has in XDP's store, so that
	// inputs reach a cas that matches.
	payload = bytes.ReplaceAll(payload, []byte("$cas"), strconv.AppendUint(nil, p.xdp.itemOf(t, []byte("a")).cas, 10))
	keys := fuzzKeys(payload)
	before := p.xdp.snapshot(t, keys)
	modelBefore := p.model.snapshot(t, keys)

	in := fuzzFrame(o, v6, id, seq, total, reserved, payload, cut, ulenDelta)
	if len(in) < frame.EthLen {
		t.Skip("BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet header, nor does a device deliver one")
	}
	out := make([]byte, len(in)+4096)
	opts := ebpf.RunOptions{Data: in, DataOut: out}
	act, err := o.objs.KvXdp.Run(&opts)
	if err != nil {
		t.Fatal(err)
	}
	after := p.xdp.snapshot(t, keys)
	switch act {
	case xdpPass:
		for i := range keys {
			if before[i] != after[i] {
				t.Fatalf("passed up %q, yet %q changed: %+v -> %+v", payload, keys[i], before[i], after[i])
			}
		}
		return
	case xdpDrop, xdpTX:
	default:
		t.Fatalf("action %d for %q", act, payload)
	}

	// XDP finished the request: it must be one memcached takes, whole.
	if cut != 0 || ulenDelta != 0 || total != 1 {
		t.Fatalf("XDP answered a frame memcached would not take (cut %d, UDP length %+d, total %d): %q", cut, ulenDelta, total, payload)
	}
	req, n, err := memcache.ParseRequest(payload)
	if err != nil || n != len(payload) {
		t.Fatalf("XDP answered %q, which is not exactly one request (%d of %d bytes, %v)", payload, n, len(payload), err)
	}
	// cas uniques differ between the stores: the one XDP's store had
	// becomes the one the model has.
	if req.Command == memcache.CmdCAS {
		for i, k := range keys {
			if !bytes.Equal(k, req.Key) {
				continue
			}
			switch req.CAS {
			case before[i].cas:
				req.CAS = modelBefore[i].cas
			case modelBefore[i].cas:
				req.CAS = ^uint64(0)
			}
			break
		}
	}
	want := p.model.exec(&req)
	modelAfter := p.model.snapshot(t, keys)

	var got []byte
	if act == xdpTX {
		r, err := frame.Parse(opts.DataOut)
		if err != nil {
			t.Fatalf("reply to %q: %v", payload, err)
		}
		d, _ := frame.Parse(in)
		if r.Src != d.Dst || r.Dst != d.Src || !bytes.Equal(r.SrcMAC, d.DstMAC) || !bytes.Equal(r.DstMAC, d.SrcMAC) ||
			r.ID != id || r.Seq != 0 || r.Total != 1 || r.Reserved != 0 {
			t.Fatalf("reply header %+v to %+v", r, d)
		}
		got = r.Payload
	}
	// Map XDP's cas uniques to the model's, key by key.
	casMap := map[uint64]uint64{}
	for i := range keys {
		casMap[before[i].cas] = modelBefore[i].cas
	}
	gotN := mapCAS(got, casMap)
	if !bytes.Equal(gotN, want) {
		t.Fatalf("%q:\n XDP   %q\n model %q", payload, got, want)
	}
	for i, k := range keys {
		a, b := after[i], modelAfter[i]
		changedA, changedB := a.cas != before[i].cas, b.cas != modelBefore[i].cas
		a.cas, b.cas = 0, 0
		if diff := int64(a.exptime) - int64(b.exptime); diff >= -1 && diff <= 1 {
			a.exptime = b.exptime // a second may tick between the two
		}
		if a != b || changedA != changedB {
			t.Fatalf("%q: %q is %+v (cas changed %v) after XDP, %+v (cas changed %v) in the model",
				payload, k, after[i], changedA, modelAfter[i], changedB)
		}
	}
}

// mapCAS rewrites the cas uniques of VALUE lines through m.
func mapCAS(reply []byte, m map[uint64]uint64) []byte {
	var out []byte
	for pos := 0; pos < len(reply); {
		eol := bytes.IndexByte(reply[pos:], '\n')
		if eol < 0 {
			return append(out, reply[pos:]...)
		}
		line := reply[pos : pos+eol+1]
		pos += eol + 1
		v, err := memcache.ParseValueLine(line)
		if err != nil || !v.HasCAS {
			out = append(out, line...)
			continue
		}
		c, ok := m[v.CAS]
		if !ok {
			c = v.CAS
		}
		out = fmt.Appendf(out, "VALUE %s %d %d %s\r\n", v.Key, v.Flags, v.Bytes, strconv.FormatUint(c, 10))
		end := min(len(reply), pos+v.Bytes+2)
		out = append(out, reply[pos:end]...)
		pos = end
	}
	return out
}
