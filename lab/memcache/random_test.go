package memcache

import (
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// randomRequest builds a request line from pieces memcached is picky
// about, sometimes followed by a data block.
func randomRequest(r *rand.Rand) string {
	cmds := []string{"get", "gets", "set", "add", "replace", "append", "prepend", "cas",
		"delete", "incr", "decr", "touch", "flush_all", "verbosity", "version", "xx", "g"}
	toks := []string{"a", "b", "0", "1", "5", "-1", "-0", "+3", "x", "1x", "noreply", "\t2",
		"4294967296", "2147483648", "18446744073709551615", "18446744073709551616",
		"9223372036854775808", "-9223372036854775809", strings.Repeat("k", 251), strings.Repeat("k", 250), "3\t"}
	var sb strings.Builder
	sb.WriteString(cmds[r.IntN(len(cmds))])
	for range r.IntN(8) {
		sb.WriteString(strings.Repeat(" ", 1+r.IntN(2)))
		sb.WriteString(toks[r.IntN(len(toks))])
	}
	if r.IntN(3) > 0 {
		sb.WriteString("\r\n")
	} else {
		sb.WriteString("\n")
	}
	if r.IntN(2) == 0 {
		sb.WriteString([]string{"abc\r\n", "a\r\n", "\r\n", "abcde\r\n", "12\r\n"}[r.IntN(5)])
	}
	return sb.String()
}

// TestRandomRequestsAgainstMemcached sends random requests to memcached and
// checks the codec's rejections byte for byte, and that memcached does not
// reject what the codec accepts.
func TestRandomRequestsAgainstMemcached(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	addr := startMemcached(t)
	r := rand.New(rand.NewPCG(1, 2))
	ins := make([]string, 400)
	for i := range ins {
		ins[i] = randomRequest(r)
	}
	got := make([]string, len(ins))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			got[i] = rawExchange(addr, []byte(in), 100*time.Millisecond)
		}()
	}
	wg.Wait()
	for i, in := range ins {
		codec := strings.TrimSuffix(renderCodec([]byte(in), true), "<incomplete>")
		if !strings.Contains(codec, "<") {
			if got[i] != codec {
				t.Errorf("%.90q: memcached %q, codec %q", in, got[i], codec)
			}
			continue
		}
		// A request the codec accepts: memcached's reply to it must not be
		// a protocol error.
		first, _, _ := strings.Cut(got[i], "\r\n")
		if strings.HasPrefix(codec, "<") && first != "" &&
			(first == "ERROR" || strings.HasPrefix(first, "CLIENT_ERROR") && !strings.Contains(first, "non-numeric")) {
			t.Errorf("%.90q: memcached %q, codec %q", in, got[i], codec)
		}
	}
}
