package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Serve commands run with --lab record themselves in the lab's directory
// (servers/PID holds the process's start time and what it is), so that
// `lab down` stops them with the lab instead of leaving them serving into
// namespaces that are gone.
const serversDir = "servers"

// serving records this process as serving in the lab; the returned func
// removes the record (call it when the process stops serving).
func (d labDir) serving(what string) (func(), error) {
	start, err := procStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(string(d), serversDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(p, []byte(fmt.Sprintf("%d %s\n", start, what)), 0o644); err != nil {
		return nil, err
	}
	return func() { os.Remove(p) }, nil
}

// stopServers stops every recorded server still running (SIGINT, as Ctrl-C
// does, so it detaches cleanly; SIGKILL if it has not exited within grace)
// and returns a line for each. A record whose process is gone, or whose PID
// now belongs to another process, is only removed.
func (d labDir) stopServers(grace time.Duration) ([]string, error) {
	dir := filepath.Join(string(d), serversDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var done []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		pid, err := strconv.Atoi(e.Name())
		b, rerr := os.ReadFile(p)
		var start uint64
		var what string
		if err == nil && rerr == nil {
			f := strings.SplitN(strings.TrimSpace(string(b)), " ", 2)
			start, _ = strconv.ParseUint(f[0], 10, 64)
			if len(f) == 2 {
				what = f[1]
			}
		}
		if now, err := procStart(pid); err == nil && now == start && start != 0 {
			how := "stopped"
			syscall.Kill(pid, syscall.SIGINT)
			if !waitExit(pid, start, grace) {
				syscall.Kill(pid, syscall.SIGKILL)
				waitExit(pid, start, 5*time.Second)
				how = "killed (it did not stop within " + grace.String() + " of SIGINT)"
			}
			done = append(done, fmt.Sprintf("%s %s (pid %d)", how, what, pid))
		}
		os.Remove(p)
	}
	return done, nil
}

// waitExit waits until the process pid that started at start is gone.
func waitExit(pid int, start uint64, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if now, err := procStart(pid); err != nil || now != start {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// procStart is a process's start time (clock ticks after boot, field 22 of
// /proc/PID/stat), which tells it from a later process with its PID. A
// zombie counts as gone.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	if f[0] == "Z" {
		return 0, os.ErrNotExist
	}
	return strconv.ParseUint(f[19], 10, 64)
}
