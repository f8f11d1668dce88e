// Package memcache speaks memcached's text protocol: a request codec whose
// errors carry the exact reply memcached 1.6 sends for the same input, reply
// framing helpers, memcached's 8-byte UDP frame header, and UDP and TCP
// clients.
//
// The codec knows no server: it says what a request is and what memcached
// would reply to a malformed one, never what a well-formed one should return.
//
// Behaviour worth knowing, measured against memcached 1.6.18 (the table in
// behaviour_test.go records it, and its test re-measures it on a live
// server):
//
//   - A line ends at '\n'; one '\r' before it is dropped. A NUL byte ends
//     the line early. Tokens are separated by ' ' only (a tab is part of a
//     key). Leading spaces are ignored.
//   - Numbers are parsed like C's strtoul/strtol: a leading '+' or '-' and
//     leading whitespace are accepted, trailing whitespace (and anything
//     after it) is ignored, and values wrap to 32 bits (flags 4294967296
//     is 0, exptime 4294967297 is 1).
//   - After a storage command line memcached rejects, the data block is
//     NOT swallowed: memcached reads it as the next command (usually
//     "ERROR"). Only a value too large for the cache is swallowed, and a
//     data block not ending in "\r\n" is consumed (length+2 bytes) before
//     "CLIENT_ERROR bad data chunk".
//   - noreply is the last token being "noreply", wherever it stands
//     ("set k 0 0 noreply" is a set with noreply and a bad length). It
//     suppresses error replies too, except "ERROR" for a wrong token count,
//     which comes before noreply is looked at. An optional last token that is
//     not "noreply" is ignored ("set k 0 0 1 x", "incr k 1 x").
//   - A get or gets with a key over 250 bytes also discards the replies
//     memcached has queued but not sent (Error.DropPending).
//   - A line longer than 2048 bytes without '\n' closes the connection
//     unless it starts with "get " or "gets ".
//
// Over UDP (see udp_test.go) memcached drops a request whose header has a
// total other than 1 (it ignores seq and reserved), and replies under the
// request's id. It sends each reply of a datagram holding several requests,
// and each VALUE of a multi-get, as its own message: datagrams numbered
// seq 0..total-1, at most 1400 bytes each, header included. END travels with
// the last key's VALUE, or alone if the last key missed; a multi-get that
// starts with a miss first sends an empty datagram with total 0. A storage
// request whose data block is not all in its datagram leaves memcached
// reading the rest from the next datagrams, headers included, which garbles
// them. Reassembler handles all of this.
package memcache
