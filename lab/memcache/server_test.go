package memcache

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

const memcachedPath = "/usr/bin/memcached"

// startMemcached runs a real memcached on loopback for the test, with TCP
// and UDP on the same random port, and returns that address.
func startMemcached(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(memcachedPath); err != nil {
		t.Skipf("differential test needs memcached at %s (apt-get install memcached): %v", memcachedPath, err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		args := []string{"-p", fmt.Sprint(port), "-U", fmt.Sprint(port), "-l", "127.0.0.1", "-t", "1", "-c", "256"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "root") // memcached refuses root without -u
		}
		cmd := exec.Command(memcachedPath, args...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start memcached: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{} // port taken meanwhile; try another
				continue
			default:
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return addr
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatal("memcached did not start")
	return ""
}

// freePort finds a port free for both TCP and UDP on loopback.
func freePort(t *testing.T) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
}

// rawExchange sends in on a new TCP connection and returns everything
// memcached sends until it is quiet for idle; "<close>" marks the server
// closing the connection.
// It may run on any goroutine, so it reports trouble in its result.
func rawExchange(addr string, in []byte, idle time.Duration) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "<dial: " + err.Error() + ">"
	}
	defer c.Close()
	if _, err := c.Write(in); err != nil {
		return "<write: " + err.Error() + ">"
	}
	var out bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return out.String()
			}
			return out.String() + "<close>"
		}
	}
}
