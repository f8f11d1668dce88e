package proxy

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// fibGroups are the rtnetlink multicast groups whose events may change a
// next hop: links, neighbours, addresses and routes of both families.
var fibGroups = []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV4_ROUTE,
	unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV6_ROUTE}

// WatchFIB listens to the route, neighbour, link and address events of the
// calling thread's network namespace (the proxy's: lock the goroutine to a
// thread there) and calls FIBChanged after each burst of them, until done
// is closed, so the program's cached next hops do not outlive a change the
// kernel reports. onErr, if not nil, hears what goes wrong after the start
// (then only HOP_USES bounds how long a change stays unseen).
func (o *Objects) WatchFIB(done <-chan struct{}, onErr func(error)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("proxy: netlink socket: %w", err)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	for _, g := range fibGroups {
		sa.Groups |= 1 << (g - 1)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return fmt.Errorf("proxy: netlink bind: %w", err)
	}
	report := func(err error) {
		if err != nil && onErr != nil {
			onErr(err)
		}
	}
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 1<<16)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			select {
			case <-done:
				return
			default:
			}
			// Wake now and then to see done; a blocking read would not.
			n, err := unix.Poll(fds, 100)
			if err == unix.EINTR || err == nil && n == 0 {
				continue
			}
			if err != nil {
				report(fmt.Errorf("proxy: netlink poll: %w", err))
				return
			}
			// Drain the burst, then void the cache once. An overrun
			// (ENOBUFS) lost events: voiding covers them too.
			for {
				_, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
				if err == unix.EINTR || err == unix.ENOBUFS {
					continue
				}
				if err != nil {
					break
				}
			}
			report(o.FIBChanged())
		}
	}()
	return nil
}
