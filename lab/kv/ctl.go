package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
)

// Control operations, conditions and results: enum kv_ctl_op, kv_ctl_cond
// and kv_ctl_result of bpf/include/kv.h, as bpf2go generates them.
const (
	ctlLoad   = kvKvCtlOpKV_CTL_LOAD
	ctlStore  = kvKvCtlOpKV_CTL_STORE
	ctlMark   = kvKvCtlOpKV_CTL_MARK
	ctlDelete = kvKvCtlOpKV_CTL_DELETE

	condAny    = kvKvCtlCondKV_COND_ANY
	condAbsent = kvKvCtlCondKV_COND_ABSENT
	condCAS    = kvKvCtlCondKV_COND_CAS

	resOK     = kvKvCtlResultKV_CTL_OK
	resFailed = kvKvCtlResultKV_CTL_FAILED
	resAbsent = kvKvCtlResultKV_CTL_ABSENT
	resError  = kvKvCtlResultKV_CTL_ERROR
	resRetry  = kvKvCtlResultKV_CTL_RETRY // the element was evicted and reused under the program
)

// ctlTries bounds the reruns of a request whose element was reused under it:
// that takes an eviction racing with it, so a second run all but always does.
const ctlTries = 8

// entry is what the control program reports for a key: an item held in
// the kernel, or a marker saying the slow path holds the value.
type entry struct {
	cas     uint64
	exptime uint64 // absolute unix seconds, 0 never
	flags   uint32
	data    []byte
	slow    bool
}

var ctlSize = int(unsafe.Sizeof(kvKvCtl{}))

// control runs the control program on one request: it takes the same stripe
// lock as XDP, so the slow path's reads and conditional writes are atomic
// with respect to XDP's.
func (o *Objects) control(c *kvKvCtl) error {
	in := make([]byte, ctlSize)
	if _, err := binary.Encode(in, binary.LittleEndian, c); err != nil {
		return err
	}
	out := make([]byte, ctlSize)
	for range ctlTries {
		opts := ebpf.RunOptions{Data: in, DataOut: out}
		if _, err := o.objs.KvControl.Run(&opts); err != nil {
			return fmt.Errorf("control program: %w", err)
		}
		if _, err := binary.Decode(opts.DataOut, binary.LittleEndian, c); err != nil {
			return err
		}
		if c.Result != resRetry {
			break
		}
	}
	switch c.Result {
	case resRetry:
		return fmt.Errorf("control program: key %q evicted under it %d times in a row", c.Key[:c.Klen], ctlTries)
	case resError:
		return fmt.Errorf("control program rejected op %d on key %q", c.Op, c.Key[:c.Klen])
	}
	return nil
}

func newCtl(op kvKvCtlOp, key []byte, now uint64) (*kvKvCtl, error) {
	if len(key) == 0 || len(key) > int(kvKvLimitKV_LIMIT_KEY_MAX) {
		return nil, fmt.Errorf("key length %d out of range", len(key))
	}
	c := &kvKvCtl{Op: op, Klen: uint32(len(key)), Now: now}
	copy(c.Key[:], key)
	return c, nil
}

// load returns the key's live entry, if any.
func (o *Objects) load(key []byte, now uint64) (entry, bool, error) {
	c, err := newCtl(ctlLoad, key, now)
	if err != nil {
		return entry{}, false, err
	}
	if err := o.control(c); err != nil {
		return entry{}, false, err
	}
	if c.Result != resOK {
		return entry{}, false, nil
	}
	return entry{cas: c.Cas, exptime: c.Exptime, flags: c.Flags, slow: c.Slow != 0,
		data: bytes.Clone(c.Data[:c.Len])}, true, nil
}

// write stores an item (or, with slow set, a marker) if cond holds. It
// reports whether it wrote and the cas the entry now has.
func (o *Objects) write(key []byte, e entry, cond kvKvCtlCond, cas uint64, now uint64) (bool, uint64, error) {
	op := ctlStore
	if e.slow {
		op = ctlMark
	}
	c, err := newCtl(op, key, now)
	if err != nil {
		return false, 0, err
	}
	if len(e.data) > int(o.cfg.MaxValue) && !e.slow {
		return false, 0, fmt.Errorf("value of %d bytes exceeds the in-kernel slot", len(e.data))
	}
	c.Cond, c.Cas, c.NewCas = cond, cas, e.cas
	c.Exptime, c.Flags, c.Len = e.exptime, e.flags, uint32(len(e.data))
	if e.slow {
		c.Len = 0
	} else {
		copy(c.Data[:], e.data)
	}
	if err := o.control(c); err != nil {
		return false, 0, err
	}
	return c.Result == resOK, c.NewCas, nil
}

// remove makes the key absent if cond holds.
func (o *Objects) remove(key []byte, cond kvKvCtlCond, cas uint64, now uint64) (bool, error) {
	c, err := newCtl(ctlDelete, key, now)
	if err != nil {
		return false, err
	}
	c.Cond, c.Cas = cond, cas
	if err := o.control(c); err != nil {
		return false, err
	}
	return c.Result == resOK, nil
}
