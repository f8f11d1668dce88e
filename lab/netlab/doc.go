// Package netlab builds throwaway network topologies for testing XDP
// programs: named network namespaces joined by veth pairs, with addresses
// from 198.18.0.0/15 and fd00::/8 only. It is modelled on xdp-tutorial's
// testenv, in Go.
//
// Every namespace and interface name starts with a per-run prefix such as
// "xl2k5f-0", which is the family [Family], the creator's pid in base 36 and
// a per-process sequence number. Parallel runs therefore never collide, and
// [SweepStale] can tell the leftovers of a crashed run (whose pid is gone)
// from those of a live one.
//
// Veth ends are created directly inside their namespaces, so nothing appears
// in the root namespace. Namespaces are bind-mounted under /run/netns, so
// `ip netns exec` and `nsenter --net=/run/netns/NAME` see them; prefer
// nsenter (see [Host.Command]) because `ip netns exec` remounts /sys and hides
// BPF pins under /sys/fs/bpf.
//
// Topology choices, made for XDP programs that forward with XDP_TX and
// XDP_REDIRECT:
//
//   - Each link is its own veth pair and its own /24 and /64 (no bridges), so
//     a proxy host has one interface per neighbour and an XDP program can
//     redirect a frame straight to the interface towards a backend. Link n
//     (counting from 1) uses 198.18.n.0/24 and fd00:0:0:n::/64; the first
//     host named in the link gets .1 and ::1, the second .2 and ::2.
//   - Both ends of every link get permanent neighbour entries for each other,
//     so no ARP or neighbour discovery is needed and an XDP program can learn
//     the next hop's MAC from [Iface.Peer].
//   - IPv6 addresses are added with nodad, so they are usable at once.
//   - Transmit checksum offload is switched off on every veth end (unless
//     [Spec.KeepChecksumOffload]): otherwise locally sent UDP leaves with only
//     a partial checksum (CHECKSUM_PARTIAL), which an XDP program that reflects
//     or forwards the frame passes on as a wrong checksum, and the receiver
//     drops it.
//   - XDP_TX and XDP_REDIRECT into a veth only deliver when the veth at the
//     other end also has an XDP program; [HostSpec.XDPPass] and
//     [AttachXDPPass] put a minimal XDP_PASS program there.
package netlab
