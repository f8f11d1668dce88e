package memcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors for the replies of typed methods that are outcomes, not failures.
var (
	ErrNotStored = errors.New("memcache: not stored")            // NOT_STORED
	ErrExists    = errors.New("memcache: exists (cas mismatch)") // EXISTS
	ErrNotFound  = errors.New("memcache: not found")             // NOT_FOUND
)

var (
	errNoReply = fmt.Errorf("%w: no reply", ErrUnexpectedReply)
	errKey     = errors.New("memcache: key is empty or has a space, control character or more than 250 bytes")
)

// validKey checks what the typed methods put on the wire; Do sends
// anything.
func validKey(k string) bool {
	if k == "" || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] == 0x7f {
			return false
		}
	}
	return true
}

func (c *Client) line(ctx context.Context, r Request) ([]byte, error) {
	reply, err := c.Do(ctx, AppendRequest(nil, r))
	if err != nil {
		return nil, err
	}
	if reply == nil {
		return nil, errNoReply
	}
	line := trimCR(bytes.TrimSuffix(reply, []byte("\n")))
	if err := errorLine(line); err != nil {
		return nil, err
	}
	return line, nil
}

func (c *Client) retrieve(ctx context.Context, cmd Command, keys []string) ([]Item, error) {
	r := Request{Command: cmd}
	for _, k := range keys {
		if !validKey(k) {
			return nil, errKey
		}
		r.Keys = append(r.Keys, []byte(k))
	}
	if len(keys) == 0 {
		return nil, nil
	}
	reply, err := c.Do(ctx, AppendRequest(nil, r))
	if err != nil {
		return nil, err
	}
	return ParseItems(reply)
}

// Get returns the items found for keys, in the server's reply order.
func (c *Client) Get(ctx context.Context, keys ...string) ([]Item, error) {
	return c.retrieve(ctx, CmdGet, keys)
}

// Gets is Get with cas uniques.
func (c *Client) Gets(ctx context.Context, keys ...string) ([]Item, error) {
	return c.retrieve(ctx, CmdGets, keys)
}

func (c *Client) store(ctx context.Context, cmd Command, it Item) error {
	if !validKey(it.Key) {
		return errKey
	}
	line, err := c.line(ctx, Request{Command: cmd, Key: []byte(it.Key), Flags: it.Flags,
		Exptime: it.Exptime, Value: it.Value, CAS: it.CAS})
	if err != nil {
		return err
	}
	return outcome(line, "STORED")
}

// outcome maps a one-line reply to nil (ok) or an outcome error.
func outcome(line []byte, ok string) error {
	switch string(line) {
	case ok:
		return nil
	case "NOT_STORED":
		return ErrNotStored
	case "EXISTS":
		return ErrExists
	case "NOT_FOUND":
		return ErrNotFound
	}
	return fmt.Errorf("%w: %q", ErrUnexpectedReply, line)
}

// Set stores it.
func (c *Client) Set(ctx context.Context, it Item) error { return c.store(ctx, CmdSet, it) }

// Add stores it if its key is not present; else ErrNotStored.
func (c *Client) Add(ctx context.Context, it Item) error { return c.store(ctx, CmdAdd, it) }

// Replace stores it if its key is present; else ErrNotStored.
func (c *Client) Replace(ctx context.Context, it Item) error { return c.store(ctx, CmdReplace, it) }

// Append appends it.Value to the stored value (flags and exptime are
// ignored by the server); ErrNotStored if the key is absent.
func (c *Client) Append(ctx context.Context, it Item) error { return c.store(ctx, CmdAppend, it) }

// Prepend is Append at the front.
func (c *Client) Prepend(ctx context.Context, it Item) error { return c.store(ctx, CmdPrepend, it) }

// CAS stores it if the stored cas unique still equals it.CAS: ErrExists if
// it changed, ErrNotFound if the key is gone.
func (c *Client) CAS(ctx context.Context, it Item) error { return c.store(ctx, CmdCAS, it) }

// Delete deletes key; ErrNotFound if absent.
func (c *Client) Delete(ctx context.Context, key string) error {
	if !validKey(key) {
		return errKey
	}
	line, err := c.line(ctx, Request{Command: CmdDelete, Key: []byte(key)})
	if err != nil {
		return err
	}
	return outcome(line, "DELETED")
}

// Incr adds delta to the decimal value at key (wrapping at 2^64) and
// returns the new value; ErrNotFound if absent.
func (c *Client) Incr(ctx context.Context, key string, delta uint64) (uint64, error) {
	return c.arith(ctx, CmdIncr, key, delta)
}

// Decr subtracts delta from the value at key, stopping at 0.
func (c *Client) Decr(ctx context.Context, key string, delta uint64) (uint64, error) {
	return c.arith(ctx, CmdDecr, key, delta)
}

func (c *Client) arith(ctx context.Context, cmd Command, key string, delta uint64) (uint64, error) {
	if !validKey(key) {
		return 0, errKey
	}
	line, err := c.line(ctx, Request{Command: cmd, Key: []byte(key), Delta: delta})
	if err != nil {
		return 0, err
	}
	if v, perr := strconv.ParseUint(string(line), 10, 64); perr == nil {
		return v, nil
	}
	return 0, outcome(line, "")
}

// Touch sets a new exptime on key; ErrNotFound if absent.
func (c *Client) Touch(ctx context.Context, key string, exptime int32) error {
	if !validKey(key) {
		return errKey
	}
	line, err := c.line(ctx, Request{Command: CmdTouch, Key: []byte(key), Exptime: exptime})
	if err != nil {
		return err
	}
	return outcome(line, "TOUCHED")
}

// FlushAll invalidates all items, after delay seconds if positive.
func (c *Client) FlushAll(ctx context.Context, delay int32) error {
	line, err := c.line(ctx, Request{Command: CmdFlushAll, Exptime: delay})
	if err != nil {
		return err
	}
	return outcome(line, "OK")
}

// Version returns the server's version string.
func (c *Client) Version(ctx context.Context) (string, error) {
	line, err := c.line(ctx, Request{Command: CmdVersion})
	if err != nil {
		return "", err
	}
	v, ok := strings.CutPrefix(string(line), "VERSION ")
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnexpectedReply, line)
	}
	return v, nil
}

// Stats returns the "STAT name value" lines of a stats reply; args select a
// group ("settings", "items", "slabs", ...).
func (c *Client) Stats(ctx context.Context, args ...string) (map[string]string, error) {
	reply, err := c.Do(ctx, AppendRequest(nil, Request{Command: CmdStats, Args: args}))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.SplitAfter(string(reply), "\n") {
		l = strings.TrimRight(l, "\r\n")
		if rest, ok := strings.CutPrefix(l, "STAT "); ok {
			name, val, _ := strings.Cut(rest, " ")
			m[name] = val
			continue
		}
		if l == "END" || l == "" {
			continue
		}
		if err := errorLine([]byte(l)); err != nil {
			return m, err
		}
		return m, fmt.Errorf("%w: %q", ErrUnexpectedReply, l)
	}
	return m, nil
}
