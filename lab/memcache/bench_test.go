package memcache

import (
	"strings"
	"testing"
)

func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"get", "get user:12345\r\n"},
		{"get10", "get" + strings.Repeat(" user:12345", 10) + "\r\n"},
		{"set100", "set user:12345 0 0 100\r\n" + strings.Repeat("v", 100) + "\r\n"},
		{"incr", "incr counter:1 1 noreply\r\n"},
	} {
		in := []byte(bc.in)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := ParseRequest(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReplyLen(b *testing.B) {
	in := []byte(strings.Repeat("VALUE user:12345 0 100\r\n"+strings.Repeat("v", 100)+"\r\n", 10) + "END\r\n")
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, ok := ReplyLen(CmdGet, in); !ok {
			b.Fatal("incomplete")
		}
	}
}
