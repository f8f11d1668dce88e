// Package memcache speaks memcached's text protocol: a request codec whose
// errors carry the exact reply memcached 1.6 sends for the same input, reply
// framing helpers, memcached's 8-byte UDP frame header, and UDP and TCP
// clients.
//
// The codec knows no server: it says what a request is and what memcached
// would reply to a malformed one, never what a well-formed one should return.
//
// Behaviour worth knowing, measured against memcached 1.6.18 (see
// memcached_test.go, which re-checks every claim against a live server):
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
//   - noreply (the last token being "noreply") suppresses error replies too,
//     except "ERROR" for a wrong token count, which is sent before noreply is
//     looked at.
//   - A line longer than 2048 bytes without '\n' closes the connection
//     unless it starts with "get " or "gets ".
//
// Over UDP memcached drops requests whose header says they span several
// datagrams, sends each part of a multi-get (a VALUE, or the final END) as
// its own message with sequence 0 and total 1, and splits long messages into
// 1400-byte datagrams (header included) with seq/total set.
package memcache
