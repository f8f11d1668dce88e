package memcache

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func FuzzParseRequest(f *testing.F) {
	for _, tc := range behaviour {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in))
		}
	}
	f.Add([]byte("cas k 5 0 1 18446744073709551615 noreply\r\nx\r\n"))
	f.Add([]byte("flush_all 10 noreply\r\n"))
	f.Add([]byte("verbosity 4294967297 noreply\r\n"))
	f.Add([]byte("stats slabs\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, n, err := ParseRequest(data)
		if n < 0 || n > len(data) {
			t.Fatalf("n = %d outside [0, %d]", n, len(data))
		}
		var e *Error
		switch {
		case err == ErrIncomplete:
			if n != 0 {
				t.Fatalf("incomplete with n = %d", n)
			}
		case errors.As(err, &e):
			if n == 0 || e.Close && n != len(data) || e.Swallow != 0 {
				t.Fatalf("error %#v with n = %d", e, n)
			}
			if !e.Silent && !e.Close && !bytes.HasSuffix(e.Reply(), []byte("\r\n")) {
				t.Fatalf("reply %q", e.Reply())
			}
		case err != nil:
			t.Fatalf("unexpected error type %T", err)
		default:
			if n == 0 || req.Command == CmdUnknown {
				t.Fatalf("parsed %+v from %d bytes", req, n)
			}
			// Any shorter input needs more bytes (or is a long line).
			_, m, err := ParseRequest(data[:n-1])
			if !(err == ErrIncomplete && m == 0) && !(errors.As(err, &e) && e.Close && n-1 > maxLineNoNewline) {
				t.Fatalf("prefix of %d bytes: %d, %v", n-1, m, err)
			}
			wire := AppendRequest(nil, req)
			again, m, err := ParseRequest(wire)
			if err != nil || m != len(wire) || !reflect.DeepEqual(again, req) {
				t.Fatalf("round trip via %q:\n got %+v, %d, %v\nwant %+v", wire, again, m, err, req)
			}
		}
		if _, m, err := (Parser{MaxItemSize: 64}).Parse(data); m < 0 || m > len(data) || errors.As(err, &e) && e.Swallow < 0 {
			t.Fatalf("Parser.Parse: n = %d, %v", m, err)
		}
		ExpectedReplies(data)
		for c := CmdUnknown; c <= CmdQuit; c++ {
			if m, ok := ReplyLen(c, data); m < 0 || m > len(data) || !ok && m != 0 {
				t.Fatalf("ReplyLen(%v) = %d, %v", c, m, ok)
			}
		}
		NormalizeCAS(data)
		ParseItems(data)
	})
}

func FuzzFrame(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 'E', 'N', 'D', '\r', '\n'}, uint16(1))
	f.Add([]byte{0, 1, 0, 2, 0, 1, 0, 0}, uint16(9))
	f.Add([]byte{0, 1, 0}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, id uint16) {
		h, err := ParseHeader(data)
		if err != nil {
			if len(data) >= HeaderLen {
				t.Fatalf("ParseHeader(% x): %v", data, err)
			}
		} else if !bytes.Equal(AppendHeader(nil, h), data[:HeaderLen]) {
			t.Fatalf("header round trip of % x", data[:HeaderLen])
		}

		var r Reassembler
		r.Expect(h.RequestID, CmdGet)
		r.Expect(id, CmdStats)
		r.Add(data)

		// Framing data as a message and reassembling it gives it back.
		ds := AppendDatagrams(nil, id, data)
		var joined []byte
		for i, d := range ds {
			dh, err := ParseHeader(d)
			if err != nil || dh.RequestID != id || int(dh.Seq) != i || int(dh.Total) != len(ds) || len(d) > MaxDatagram {
				t.Fatalf("datagram %d of %d: %+v %v", i, len(ds), dh, err)
			}
			joined = append(joined, d[HeaderLen:]...)
		}
		if !bytes.Equal(joined, data) {
			t.Fatal("datagrams do not add up to the message")
		}
		var r2 Reassembler
		r2.Expect(id, CmdUnknown)
		msg := append(append([]byte(nil), bytes.ReplaceAll(data, []byte("\n"), nil)...), '\n')
		var got []byte
		var done bool
		for _, d := range AppendDatagrams(nil, id, msg) {
			_, got, done = r2.Add(d)
		}
		if !done || !bytes.Equal(got, msg) {
			t.Fatalf("reassembled %q, %v; want %q", got, done, msg)
		}
	})
}
