package proxy

import (
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/xdplab/xdplab/lab/memcache"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Server is one backend as nutcracker's config names it, "host:port:weight
// [name]". Host is kept as written because ketama hashes the text, not the
// address: "10.0.0.1" and "010.0.0.1" are different ring positions.
type Server struct {
	Host   string // IP literal or host name; IPv6 without brackets, as nutcracker wants
	Port   uint16
	Weight uint32 // at least 1
	Name   string // optional; when set, ketama hashes it instead of the address
}

// DefaultPort is memcached's port, which ketama leaves out of the hashed
// identity of an unnamed server (for libmemcached compatibility).
const DefaultPort = memcache.DefaultPort

// maxIdentity bounds Server.Identity. nutcracker formats "identity-N" into a
// fixed buffer (273 bytes in 0.5.0, 86 before) and hashes the untruncated
// length, reading past the buffer when it is too long; 80 keeps every
// version well-defined.
const maxIdentity = 80

// ParseServer parses nutcracker's "host:port:weight [name]". Like nutcracker
// it splits from the end: the name after the last space, then weight and
// port after the last two colons, so an unbracketed IPv6 host works. Unix
// socket servers are not supported.
func ParseServer(s string) (Server, error) {
	bad := func(why string) (Server, error) {
		return Server{}, fmt.Errorf("server %q: %s (want host:port:weight [name])", s, why)
	}
	var srv Server
	rest := s
	if i := strings.LastIndexByte(rest, ' '); i >= 0 {
		rest, srv.Name = rest[:i], rest[i+1:]
		if srv.Name == "" {
			return bad("empty name")
		}
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return bad("no weight")
	}
	rest, weight := rest[:i], rest[i+1:]
	i = strings.LastIndexByte(rest, ':')
	if i < 0 {
		return bad("no port")
	}
	host, port := rest[:i], rest[i+1:]
	if host == "" || strings.HasPrefix(host, "/") {
		return bad("no host (unix sockets are not supported)")
	}
	if strings.ContainsAny(host, " []") {
		return bad("host has a space or a bracket (write IPv6 addresses unbracketed)")
	}
	w, err := strconv.ParseUint(weight, 10, 32)
	if err != nil || w == 0 {
		return bad("weight must be a whole number from 1")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return bad("port must be 1..65535")
	}
	srv.Host, srv.Port, srv.Weight = host, uint16(p), uint32(w)
	if err := srv.validate(); err != nil {
		return Server{}, err
	}
	return srv, nil
}

func (s Server) validate() error {
	if s.Host == "" || s.Port == 0 || s.Weight == 0 {
		return fmt.Errorf("server %q: needs a host, a port and a weight of at least 1", s.String())
	}
	if strings.ContainsAny(s.Name, " \t\r\n") {
		return fmt.Errorf("server %q: name has white space", s.String())
	}
	if len(s.Identity()) > maxIdentity {
		return fmt.Errorf("server %q: name or address longer than %d bytes", s.String(), maxIdentity)
	}
	return nil
}

// String is the server in nutcracker's config syntax.
func (s Server) String() string {
	out := s.Host + ":" + strconv.Itoa(int(s.Port)) + ":" + strconv.FormatUint(uint64(s.Weight), 10)
	if s.Name != "" {
		out += " " + s.Name
	}
	return out
}

// Identity is the text ketama hashes for the server's points: the name if
// it has one, else the host alone on port 11211, else "host:port" (the
// host as written; nutcracker's conf_add_server).
func (s Server) Identity() string {
	switch {
	case s.Name != "":
		return s.Name
	case s.Port == DefaultPort:
		return s.Host
	default:
		return s.Host + ":" + strconv.Itoa(int(s.Port))
	}
}

// AddrPort is the server's address when Host is an IP literal.
func (s Server) AddrPort() (netip.AddrPort, error) {
	a, err := netip.ParseAddr(s.Host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("server %q: host is not an IP address", s.String())
	}
	return netip.AddrPortFrom(a.Unmap(), s.Port), nil
}

// Point is one position on the continuum, owned by a server.
type Point struct {
	Hash   uint32
	Server int // index into Ring.Servers
}

// Ring is nutcracker's ketama continuum (src/hashkit/nc_ketama.c) over a
// list of servers, some of which may be out (ejected). Build a new Ring
// when the live set changes; a Ring is read-only and safe to share.
type Ring struct {
	servers []Server
	live    []bool
	points  []Point // sorted by Hash; equal hashes keep build order
}

const (
	pointsPerServer = 160 // KETAMA_POINTS_PER_SERVER
	pointsPerHash   = 4   // one md5 digest gives four 32-bit points
)

// NewRing builds the continuum over servers, as nutcracker's ketama_update
// does with auto_eject_hosts for the live ones: live[i] false leaves
// servers[i] out, and the others share all the points by weight. live nil
// means all are live. Server indexes stay those of the full list, so
// lookups name the same backend whatever is ejected.
func NewRing(servers []Server, live []bool) (*Ring, error) {
	if len(servers) == 0 {
		return nil, errors.New("ring: no servers")
	}
	if live != nil && len(live) != len(servers) {
		return nil, fmt.Errorf("ring: %d live flags for %d servers", len(live), len(servers))
	}
	ring := &Ring{servers: slices.Clone(servers), live: make([]bool, len(servers))}
	var nlive, total uint64
	for i, s := range servers {
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("ring: %w", err)
		}
		ring.live[i] = live == nil || live[i]
		if ring.live[i] {
			nlive++
			total += uint64(s.Weight)
		}
	}
	if total > math.MaxUint32 {
		return nil, errors.New("ring: total weight exceeds 2^32-1")
	}
	for i, s := range servers {
		if !ring.live[i] {
			continue
		}
		n := serverPoints(s.Weight, uint32(total), uint32(nlive))
		id := s.Identity()
		for j := uint32(0); j < n/pointsPerHash; j++ {
			d := md5.Sum([]byte(id + "-" + strconv.FormatUint(uint64(j), 10)))
			for x := 0; x < pointsPerHash; x++ {
				ring.points = append(ring.points, Point{Hash: binary.LittleEndian.Uint32(d[4*x:]), Server: i})
			}
		}
	}
	// nutcracker sorts with glibc's qsort, a merge sort (stable) at these
	// sizes, so on a tie the point built first, the earlier server's, wins.
	slices.SortStableFunc(ring.points, func(a, b Point) int {
		switch {
		case a.Hash < b.Hash:
			return -1
		case a.Hash > b.Hash:
			return 1
		}
		return 0
	})
	return ring, nil
}

// serverPoints is ketama_update's
//
//	pct = (float)weight / (float)total_weight;
//	floorf((float)(pct * 160 / 4 * (float)nlive + 0.0000000001)) * 4
//
// evaluated as C does: each step rounded to float32, the small constant
// added in double. The rounding matters: weights 1,2,3 give 20, 40 and 60
// hashes only because the float32 products land on whole numbers.
// Explicit conversions stop Go from fusing the steps.
func serverPoints(weight, total, nlive uint32) uint32 {
	pct := float32(weight) / float32(total)
	x := float32(pct * pointsPerServer)
	x = float32(x / pointsPerHash)
	x = float32(x * float32(nlive))
	y := float32(float64(x) + 0.0000000001)
	return uint32(math.Floor(float64(y))) * pointsPerHash
}

// Servers returns the ring's servers, live or not, in configuration order.
func (r *Ring) Servers() []Server { return slices.Clone(r.servers) }

// Live reports whether servers[i] has points on the ring.
func (r *Ring) Live(i int) bool { return r.live[i] }

// Points returns the continuum, sorted by Hash.
func (r *Ring) Points() []Point { return slices.Clone(r.points) }

// Lookup returns the index of the server that key goes to, as nutcracker's
// server_pool_idx computes it without a hash_tag, or -1 when no server is
// live.
func (r *Ring) Lookup(key []byte) int {
	if len(r.points) == 0 {
		return -1
	}
	if len(r.servers) == 1 {
		return 0 // nutcracker skips hashing for a one-server pool
	}
	var h uint32 // nutcracker hashes an empty key to 0
	if len(key) > 0 {
		h = Hash(key)
	}
	return r.LookupHash(h)
}

// LookupHash returns the server owning the first point at or after h,
// wrapping to the first point (ketama_dispatch), or -1 when no server is
// live.
func (r *Ring) LookupHash(h uint32) int {
	if len(r.points) == 0 {
		return -1
	}
	i, _ := slices.BinarySearchFunc(r.points, h, func(p Point, h uint32) int {
		if p.Hash < h {
			return -1
		}
		return 1 // never 0: find the first point >= h even among ties
	})
	if i == len(r.points) {
		i = 0
	}
	return r.points[i].Server
}

// The bucket table's size (one bucket per value of the hash's top 16
// bits), and the mark of a bucket whose hashes go to more than one server:
// BUCKETS and BUCKET_MIXED of bpf/proxy.bpf.c, through bpf2go.
const (
	bucketCount = int(proxyProxyLimitPROXY_BUCKETS)
	bucketMixed = int(proxyProxyLimitPROXY_BUCKET_MIXED)
)

// buckets is the ring as a table over the top 16 bits of the hash: the
// server of every hash in bucket j (j<<16 .. j<<16|0xffff), or bucketMixed
// where a point falls inside the bucket and splits it. The XDP program
// reads it first and searches the points only for a mixed bucket.
func (r *Ring) buckets() []uint16 {
	b := make([]uint16, bucketCount)
	if len(r.points) == 0 {
		return b // unused: the program sees no points and routes nothing
	}
	i := 0 // the first point at or after the bucket's lowest hash
	for j := range b {
		lo, hi := uint32(j)<<16, uint32(j)<<16|0xffff
		for i < len(r.points) && r.points[i].Hash < lo {
			i++
		}
		owner := r.points[i%len(r.points)].Server
		// A hash past a point inside the bucket goes to the next point.
		for k := i; k < len(r.points) && r.points[k].Hash < hi; k++ {
			if r.points[(k+1)%len(r.points)].Server != owner {
				owner = bucketMixed
				break
			}
		}
		b[j] = uint16(owner)
	}
	return b
}

// Hash is nutcracker's fnv1a_32 of a key. nutcracker reads the key through
// a (signed on x86) char, so a byte from 0x80 up is sign-extended before
// the xor: this differs from textbook FNV-1a for such bytes, and matching
// it matters because memcached keys may contain them.
func Hash(key []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range key {
		h ^= uint32(int32(int8(c)))
		h *= 16777619
	}
	return h
}
