package memcache

import (
	"encoding/binary"
	"errors"
)

const (
	// HeaderLen is the size of memcached's UDP frame header.
	HeaderLen = 8
	// MaxDatagram is the largest datagram memcached sends, header included
	// (UDP_MAX_PAYLOAD_SIZE); replies longer than MaxDatagram-HeaderLen bytes
	// are split.
	MaxDatagram = 1400
)

// Header is memcached's UDP frame header. All fields are big endian on the
// wire.
type Header struct {
	RequestID uint16 // echoed by the server in every reply datagram
	Seq       uint16 // index of this datagram within its message
	Total     uint16 // number of datagrams in the message
	Reserved  uint16 // must be zero; memcached ignores it
}

// ErrShortHeader is returned by ParseHeader for a datagram shorter than
// HeaderLen.
var ErrShortHeader = errors.New("memcache: datagram shorter than the 8-byte frame header")

// ParseHeader reads the frame header at the start of a datagram; the
// payload is b[HeaderLen:].
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShortHeader
	}
	return Header{
		RequestID: binary.BigEndian.Uint16(b[0:]),
		Seq:       binary.BigEndian.Uint16(b[2:]),
		Total:     binary.BigEndian.Uint16(b[4:]),
		Reserved:  binary.BigEndian.Uint16(b[6:]),
	}, nil
}

// AppendHeader appends h in wire format to dst.
func AppendHeader(dst []byte, h Header) []byte {
	dst = binary.BigEndian.AppendUint16(dst, h.RequestID)
	dst = binary.BigEndian.AppendUint16(dst, h.Seq)
	dst = binary.BigEndian.AppendUint16(dst, h.Total)
	return binary.BigEndian.AppendUint16(dst, h.Reserved)
}

// AppendDatagrams splits msg into datagrams of at most MaxDatagram bytes,
// each with a header for request id, the way memcached frames a message,
// and appends them to dst. An empty msg still yields one datagram. A message
// needing more than 65535 datagrams cannot be framed; its Total wraps.
func AppendDatagrams(dst [][]byte, id uint16, msg []byte) [][]byte {
	const chunk = MaxDatagram - HeaderLen
	total := (len(msg) + chunk - 1) / chunk
	if total == 0 {
		total = 1
	}
	for seq := 0; seq < total; seq++ {
		part := msg[seq*chunk : min(len(msg), (seq+1)*chunk)]
		d := make([]byte, 0, HeaderLen+len(part))
		d = AppendHeader(d, Header{RequestID: id, Seq: uint16(seq), Total: uint16(total)})
		dst = append(dst, append(d, part...))
	}
	return dst
}
