package netlab

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-multierror"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Family starts every name netlab creates. Sweeps never touch anything else.
const Family = "xl"

// NetnsDir is where named namespaces are bind-mounted, as iproute2 does.
const NetnsDir = "/run/netns"

var prefixSeq atomic.Uint32

// NewPrefix returns a run prefix unique to this process and call, such as
// "xl2k5f-0": Family, the pid in base 36, "-", a sequence number in base 36.
func NewPrefix() string {
	return Family + strconv.FormatInt(int64(os.Getpid()), 36) + "-" +
		strconv.FormatUint(uint64(prefixSeq.Add(1)-1), 36)
}

// NewDetachedPrefix returns a run prefix for a topology meant to outlive
// its creator (`lab up`), such as "xl0-k3v9q": pid 0 marks it as owned by
// nobody, so SweepStale leaves it alone; remove it with Sweep(prefix).
func NewDetachedPrefix() string {
	var b [4]byte
	_, _ = rand.Read(b[:3])
	return Family + "0-" + strconv.FormatUint(uint64(binary.LittleEndian.Uint32(b[:])), 36)
}

// ParsePrefix extracts the run prefix and the creator's pid (0 for a
// detached run) from a name netlab made: a prefix, or a prefix followed by
// "-" and more.
func ParsePrefix(name string) (prefix string, pid int, ok bool) {
	rest, found := strings.CutPrefix(name, Family)
	if !found {
		return "", 0, false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) < 2 || !isBase36(parts[0]) || !isBase36(parts[1]) {
		return "", 0, false
	}
	p, err := strconv.ParseInt(parts[0], 36, 32)
	if err != nil || p < 0 || p == 0 && parts[0] != "0" {
		return "", 0, false
	}
	return Family + parts[0] + "-" + parts[1], int(p), true
}

func isBase36(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

// pidAlive reports whether a process with this pid exists. A reused pid
// looks alive: sweeping then errs on the side of leaving things alone.
// Pid 0, a detached run, counts as alive.
func pidAlive(pid int) bool {
	if pid == 0 {
		return true
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Runs lists the run prefixes that own a namespace or a root-namespace link,
// and whether each run's creator is still alive.
func Runs() (map[string]bool, error) {
	names, err := familyNames()
	runs := map[string]bool{}
	for _, n := range names {
		if prefix, pid, ok := ParsePrefix(n); ok {
			runs[prefix] = pidAlive(pid)
		}
	}
	return runs, err
}

// familyNames lists namespace names and root-namespace link names in Family.
func familyNames() ([]string, error) {
	var names []string
	var errs error
	ents, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = multierror.Append(errs, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), Family) {
			names = append(names, e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		errs = multierror.Append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		if n := l.Attrs().Name; strings.HasPrefix(n, Family) {
			names = append(names, n)
		}
	}
	return names, errs
}

// SweepStale removes everything left by runs whose creator is gone and
// returns their prefixes. It is safe while other runs are live.
func SweepStale() ([]string, error) {
	runs, errs := Runs()
	var swept []string
	for prefix, alive := range runs {
		if alive {
			continue
		}
		if err := Sweep(prefix); err != nil {
			errs = multierror.Append(errs, err)
		}
		swept = append(swept, prefix)
	}
	return swept, errs
}

// Sweep removes the namespaces and root-namespace links of one run, given
// its prefix, first killing any process still inside those namespaces (a
// process keeps its namespace, and so the veths in it, alive). Given Family
// itself, it removes every run's objects, live runs' included: use that only
// when nothing else is running. Sweeping a prefix with nothing left is not an
// error.
func Sweep(prefix string) error {
	if prefix != Family {
		if p, _, ok := ParsePrefix(prefix); !ok || p != prefix {
			return fmt.Errorf("netlab: sweep: %q is not a run prefix like %q", prefix, NewPrefix())
		}
	}
	match := func(name string) bool {
		if prefix == Family {
			return strings.HasPrefix(name, Family)
		}
		return name == prefix || strings.HasPrefix(name, prefix+"-")
	}
	names, errs := familyNames()
	for _, n := range names {
		if !match(n) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(NetnsDir, n)); err == nil {
			if err := killInNetns(filepath.Join(NetnsDir, n)); err != nil {
				errs = multierror.Append(errs, err)
			}
			if err := deleteNamedNetns(n); err != nil {
				errs = multierror.Append(errs, err)
			}
			continue
		}
		if l, err := netlink.LinkByName(n); err == nil {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = multierror.Append(errs, fmt.Errorf("delete link %s: %w", n, err))
			}
		}
	}
	if errs != nil {
		return fmt.Errorf("netlab: sweep %s: %w", prefix, errs)
	}
	return nil
}
