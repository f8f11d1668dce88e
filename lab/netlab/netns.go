package netlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNetns runs fn on the calling goroutine with its OS thread locked and
// switched into ns, then switches back. Sockets opened by fn stay in ns.
func inNetns(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: enter netns: %w", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread is stuck in the wrong namespace; leaving it locked
			// would silently run the rest of this goroutine there.
			panic(fmt.Sprintf("netlab: cannot restore network namespace: %v", err))
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// ensureNetnsDir makes NetnsDir a shared mount point, as `ip netns add`
// does, so namespaces mounted there show up in other mount namespaces too.
func ensureNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	for made := false; ; made = true {
		err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || made {
			return fmt.Errorf("make %s shared: %w", NetnsDir, err)
		}
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", NetnsDir, err)
		}
	}
}

// createNamedNetns creates a namespace bind-mounted at NetnsDir/name and
// returns a handle to it. The calling thread's namespace is unchanged.
func createNamedNetns(name string) (netns.NsHandle, error) {
	if err := ensureNetnsDir(); err != nil {
		return netns.None(), fmt.Errorf("netlab: %w", err)
	}
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	// A fresh goroutine: if switching back fails it exits still locked, and
	// the runtime throws the tainted thread away.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{netns.None(), err}
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{ns, err}
	}()
	r := <-done
	if r.err != nil {
		// NewNamed may have created the file before failing to mount it;
		// if the file was there before, it is someone else's.
		if !errors.Is(r.err, os.ErrExist) {
			_ = deleteNamedNetns(name)
		}
		return netns.None(), fmt.Errorf("netlab: create netns %s: %w", name, r.err)
	}
	return r.ns, nil
}

// deleteNamedNetns unmounts and removes NetnsDir/name. The namespace itself
// (and every veth in it) goes once no process or open handle refers to it.
func deleteNamedNetns(name string) error {
	p := filepath.Join(NetnsDir, name)
	var errs error
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = multierror.Append(errs, fmt.Errorf("unmount %s: %w", p, err))
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = multierror.Append(errs, err)
	}
	return errs
}

// killInNetns SIGKILLs every process (other than this one) whose network
// namespace is the one mounted at path, and waits briefly for them to go.
func killInNetns(path string) error {
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	inside := func() []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			var st unix.Stat_t
			if unix.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st) == nil &&
				st.Dev == want.Dev && st.Ino == want.Ino {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	pids := inside()
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	// Zombies keep their /proc entry but no longer their namespace.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if len(inside()) == 0 {
			return nil
		}
	}
	return fmt.Errorf("processes %v in %s did not exit", inside(), path)
}
