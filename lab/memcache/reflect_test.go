package memcache

import "testing"

func TestUnanswerable(t *testing.T) {
	for _, c := range []struct {
		payload string
		want    bool
	}{
		{"ERROR\r\n", true}, {"CLIENT_ERROR bad data chunk\r\n", true}, {"SERVER_ERROR out of memory\r\n", true},
		{"VALUE k 0 1\r\nx\r\nEND\r\n", true}, {"END\r\n", true}, {"STORED\r\n", true}, {"STAT pid 1\r\n", true},
		{"VERSION 1.6.18\r\n", true}, {"OK\r\n", true}, {"18446744073709551615\r\n", true}, {"   DELETED\r\n", true},
		{"HD\r\n", true}, {"END", true},
		{"get k\r\n", false}, {"bogus\r\n", false}, {"\r\n", false}, {"", false}, {"error\r\n", false},
		{"ENDS\r\n", false}, {"4x\r\n", false}, {"\x00ERROR\r\n", false}, {"-1\r\n", false},
	} {
		if got := Unanswerable(40000, 11300, []byte(c.payload)); got != c.want {
			t.Errorf("%q from an ordinary port: %v, want %v", c.payload, got, c.want)
		}
	}
	for _, port := range []uint16{0, 53, 1023, DefaultPort, 11300} {
		if !Unanswerable(port, 11300, []byte("get k\r\n")) {
			t.Errorf("get from port %d to a server on 11300 is answered", port)
		}
	}
}
