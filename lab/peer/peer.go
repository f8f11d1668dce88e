// Package peer starts real daemons (memcached, nutcracker) inside netlab
// hosts, as references and oracles for the XDP programs under test.
package peer

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xdplab/xdplab/lab/netlab"
)

// Process is a daemon running in a host's namespace.
type Process struct {
	Name string // "memcached", "nutcracker"
	Host *netlab.Host
	Cmd  *exec.Cmd
	// TCP are the endpoints it serves over TCP; UDP those over UDP, if any.
	TCP []netip.AddrPort
	UDP []netip.AddrPort

	ctx      context.Context
	dir      string // temp dir removed by Stop
	out      *tail
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// DefaultStartTimeout bounds the wait for a daemon to answer when ctx has
// no deadline; generous because VMs under TCG start processes slowly.
const DefaultStartTimeout = 30 * time.Second

// findBinary returns path if it exists, else name from $PATH.
func findBinary(path, name string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found: run make deps", name)
}

// start runs bin with args in h's namespace. Cancelling ctx kills it.
func start(ctx context.Context, h *netlab.Host, name, bin string, args []string, dir string) (*Process, error) {
	p := &Process{Name: name, Host: h, ctx: ctx, dir: dir, out: &tail{max: 8 << 10}, done: make(chan struct{})}
	p.Cmd = h.CommandContext(ctx, bin, args...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.out, p.out
	// Dies with the test process even if it crashes before Stop.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.Cmd.WaitDelay = time.Second
	if err := p.Cmd.Start(); err != nil {
		p.removeDir()
		return nil, fmt.Errorf("start %s in %s: %w", name, h.Name, err)
	}
	go func() {
		p.waitErr = p.Cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls probe against each of p.TCP until all answer, the
// process exits or ctx (or DefaultStartTimeout) runs out. On failure it
// stops p.
func (p *Process) waitReady(ctx context.Context, probe func(net.Conn) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	var lastErr error
	for _, ap := range p.TCP {
		for {
			lastErr = p.probeOnce(ctx, ap, probe)
			if lastErr == nil {
				break
			}
			select {
			case <-p.done:
				err := fmt.Errorf("%s in %s exited during start: %v%s", p.Name, p.Host.Name, p.waitErr, p.outputSuffix())
				p.Stop()
				return err
			case <-ctx.Done():
				err := fmt.Errorf("%s in %s did not answer on %s: %v%s", p.Name, p.Host.Name, ap, lastErr, p.outputSuffix())
				p.Stop()
				return err
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func (p *Process) probeOnce(ctx context.Context, ap netip.AddrPort, probe func(net.Conn) error) error {
	var c net.Conn
	err := p.Host.Do(func() (err error) {
		// The socket is created here, in the namespace; connecting from
		// inside Do keeps the whole exchange on this thread's view.
		d := net.Dialer{Timeout: time.Second}
		c, err = d.DialContext(ctx, "tcp", ap.String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	return probe(c)
}

// probeVersion is memcached's liveness check: "version" → "VERSION x".
func probeVersion(c net.Conn) error {
	if _, err := c.Write([]byte("version\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "VERSION ") {
		return fmt.Errorf("answered %q to version", line)
	}
	return nil
}

// Stop kills the process, waits for it and removes its temp files. It
// returns an error only if the process had already failed on its own.
// Safe to call more than once.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			// It exited by itself (or ctx killed it): report how.
			if p.waitErr != nil && p.ctx.Err() == nil {
				p.stopErr = fmt.Errorf("%s in %s had exited: %v%s", p.Name, p.Host.Name, p.waitErr, p.outputSuffix())
			}
		default:
			p.Cmd.Process.Kill()
			<-p.done
		}
		p.removeDir()
	})
	return p.stopErr
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output returns the last few KB the process wrote to stdout and stderr.
func (p *Process) Output() string { return p.out.String() }

func (p *Process) outputSuffix() string {
	if s := strings.TrimSpace(p.Output()); s != "" {
		return "\n" + s
	}
	return ""
}

func (p *Process) removeDir() {
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, b...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// hostAddrs is every address of h's interfaces, IPv4 first.
func hostAddrs(h *netlab.Host) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, i := range h.Ifaces {
		v4 = append(v4, i.IPv4.Addr())
		v6 = append(v6, i.IPv6.Addr())
	}
	return append(v4, v6...)
}
