package memcache_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/xdplab/xdplab/lab/memcache"
)

func ExampleParseRequest() {
	buf := []byte("set k 0 0 5 noreply\r\nhello\r\nset k 0 0 -1\r\nget a b\r\n")
	for len(buf) > 0 {
		req, n, err := memcache.ParseRequest(buf)
		var e *memcache.Error
		switch {
		case err == memcache.ErrIncomplete:
			return // read more bytes
		case errors.As(err, &e):
			fmt.Printf("reply %q\n", e.Reply())
		case req.Command == memcache.CmdGet:
			fmt.Printf("get %q\n", req.Keys)
		default:
			fmt.Printf("%s %q %q noreply=%v\n", req.Command, req.Key, req.Value, req.NoReply)
		}
		buf = buf[n:]
	}
	// Output:
	// set "k" "hello" noreply=true
	// reply "CLIENT_ERROR bad command line format\r\n"
	// get ["a" "b"]
}

func ExampleReassembler() {
	var r memcache.Reassembler
	r.Expect(7, memcache.CmdGet)
	// memcached sends each VALUE of a multi-get as its own message.
	var dgrams [][]byte
	dgrams = memcache.AppendDatagrams(dgrams, 7, []byte("VALUE a 0 1\r\n1\r\n"))
	dgrams = memcache.AppendDatagrams(dgrams, 7, []byte("END\r\n"))
	for _, d := range dgrams {
		if id, reply, done := r.Add(d); done {
			fmt.Printf("%d %q\n", id, reply)
		}
	}
	// Output: 7 "VALUE a 0 1\r\n1\r\nEND\r\n"
}

func ExampleClient_Send() {
	c, err := memcache.DialUDP("127.0.0.1:11211")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// Keep a window of requests in flight.
	var calls []*memcache.Call
	for i := range 10 {
		call, err := c.Send(fmt.Appendf(nil, "get key%d\r\n", i))
		if err != nil {
			fmt.Println(err)
			return
		}
		calls = append(calls, call)
	}
	for _, call := range calls {
		reply, err := call.Wait(ctx)
		fmt.Printf("%q %v\n", reply, err)
	}
}
