// Package proxy loads and runs the XDP memcached proxy (bpf/proxy.bpf.c):
// the consistent-hash ring, the backends and their health.
//
// The ring ([Ring]) is nutcracker 0.5.0's ketama with fnv1a_32, placement
// for placement: the same servers put a key on the same backend through
// either proxy (TestRingMatchesNutcracker checks it against a real
// nutcracker). Details that matter: an unnamed server on port 11211 hashes
// as its host alone, others as "host:port", a named one as its name; point
// counts are computed in float32 as nutcracker does; key bytes from 0x80 up
// are sign-extended in the hash; ejected servers leave the ring and the
// others share all the points by weight.
//
// The data path, decided in XDP on the proxy host:
//
//   - A request to the proxy's address and port whose keys all land on one
//     backend ([Route] is the decision, in Go; the program must agree with it
//     on every input) has its destination rewritten to that backend and is
//     redirected to the interface the FIB names (its answer cached per backend
//     and CPU until [Objects.FIBChanged], which [Objects.WatchFIB] calls on
//     routing events, or 4096 uses). The client's source address
//     and port, and its request id, are kept: the backend answers the client
//     directly, through the proxy, which is its gateway. Nothing is kept per
//     request (only per client, below), and clients whose request ids
//     collide cannot get each other's replies. A request from a port a
//     reply loop could run through (memcache.Unanswerable), or from a
//     backend's own address and port, is dropped (the slow path refuses
//     it too): forwarded, it would have a backend answer a backend.
//   - A datagram from a backend's address and port to a client that has sent
//     that backend requests through the proxy (an LRU map of client address,
//     port and backend, holding the interface the FIB sent the requests
//     out of), arriving on that interface, gets the proxy's address and port
//     as its source and goes to the client. Traffic between a backend and
//     anyone else passes, and so does a datagram with the backend's source
//     that comes in on another interface (counted as a spoofed reply): a
//     source address is anyone's to write.
//   - Requests plant those flows, and a request's source is anyone's to
//     write too: a flood of spoofed sources, each answered by its backend as
//     a client would be, would push real clients' flows out of the LRU map.
//     So each CPU plants at most [Config.NewFlows] flows a second (1024 by
//     default); a request that would plant one more goes to the slow path,
//     which needs no flow (Stats.FlowLimit counts them). A flood turns the
//     65536 flows over in no less than 65536 / (NewFlows × CPUs) seconds;
//     a client whose flow went plants it again with its next request.
//   - Everything else passes to the kernel untouched: frames the kernel
//     would not take as the host's (a multicast or broadcast destination, a
//     bad IP version or IPv4 header checksum, lengths beyond the frame or
//     the IP payload: bpf/include/frame.h), other traffic, and the
//     requests XDP does not finish (multi-key gets spanning backends,
//     pipelined or multi-datagram requests, odd spellings, requests larger
//     than the backend link's MTU), which the Go slow path ([SlowPath])
//     on the proxy's address and port serves: it forwards them from a
//     socket of its own, splits gets spanning backends and merges the
//     replies in the client's key order, and answers version, malformed
//     requests (memcached's error replies) and requests no live backend
//     can take (nutcracker's "SERVER_ERROR Connection refused") itself.
//
// Attach the program to the proxy's interface towards the clients and to
// those towards the backends; the ends facing it need an XDP program of
// their own for redirected frames to arrive on veth (see netlab).
//
// The ring lives in a double-buffered BPF array: [Objects.SetBackends]
// writes the idle copy and then flips an index, so the program sees the
// old ring or the new one. [Health] probes backends with "version" and
// reports live sets to feed it. [Proxy] ties the three together, as
// `lab proxy serve` runs them; [ParseConfig] reads a nutcracker pool.
package proxy
