package bench

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// cpuTimes is the machine's CPU time from /proc/stat's first line, in
// clock ticks summed over its CPUs: busy (user, nice, system, irq,
// softirq, steal) and all; and how many CPUs (its cpuN lines).
type cpuTimes struct {
	busy, total uint64
	softirq     uint64 // of busy: softirq, where XDP and the packet path run
	cpus        int
}

// readCPU reads /proc/stat; false where there is none.
func readCPU() (cpuTimes, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	line, rest, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return cpuTimes{}, false
	}
	var t cpuTimes
	for i, s := range f[1:9] { // user nice system idle iowait irq softirq steal
		v, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return cpuTimes{}, false
		}
		t.total += v
		if i != 3 && i != 4 {
			t.busy += v
		}
		if i == 6 {
			t.softirq = v
		}
	}
	for _, l := range bytes.Split(rest, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("cpu")) {
			t.cpus++
		}
	}
	return t, t.cpus > 0
}

// cpuMeter samples the machine's CPU time at the start and end of the
// measured window, so a result can say how much CPU the whole path (client,
// kernel, servers: everything on the machine) spent per request. That is
// the cost the throughput is bought with, and it varies less with the
// client's shape than throughput does.
type cpuMeter struct {
	done    chan struct{}
	busy    float64 // cores busy on average over the window
	softirq float64 // of them, in softirq
	ok      bool
	// self is this process's CPU time (getrusage) in the window; allocs
	// its heap allocations.
	self   time.Duration
	selfOK bool
	allocs uint64
}

// selfCPU is this process's user and system time so far.
func selfCPU() (time.Duration, bool) {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

func startCPUMeter(ph phases) *cpuMeter {
	m := &cpuMeter{done: make(chan struct{})}
	go func() {
		defer close(m.done)
		time.Sleep(time.Until(ph.base.Add(ph.measure)))
		a, ok1 := readCPU()
		sa, sok1 := selfCPU()
		ma := mallocs()
		time.Sleep(time.Until(ph.base.Add(ph.end)))
		b, ok2 := readCPU()
		sb, sok2 := selfCPU()
		m.allocs = mallocs() - ma
		m.self, m.selfOK = sb-sa, sok1 && sok2
		if ok1 && ok2 && b.total > a.total {
			m.busy = float64(b.busy-a.busy) / float64(b.total-a.total) * float64(b.cpus)
			m.softirq = float64(b.softirq-a.softirq) / float64(b.total-a.total) * float64(b.cpus)
			m.ok = true
		}
	}()
	return m
}
