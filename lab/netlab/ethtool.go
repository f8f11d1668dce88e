package netlab

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy ethtool commands from linux/ethtool.h; still served by every
// kernel, and no ethtool binary is needed.
const (
	ethtoolGTXCSUM = 0x16
	ethtoolSTXCSUM = 0x17
	ethtoolGGRO    = 0x2b
	ethtoolSGRO    = 0x2c
)

type ethtoolValue struct{ cmd, data uint32 }

// ifreqData is struct ifreq with ifr_data set.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool issues one SIOCETHTOOL ioctl for dev in the calling thread's
// network namespace.
func ethtool(dev string, v *ethtoolValue) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], dev)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return errno
	}
	return nil
}

// setTxChecksum is `ethtool -K dev tx on|off`.
func setTxChecksum(dev string, on bool) error {
	v := ethtoolValue{cmd: ethtoolSTXCSUM}
	if on {
		v.data = 1
	}
	return ethtool(dev, &v)
}

// txChecksum is whether `ethtool -k dev` shows tx-checksumming on.
func txChecksum(dev string) (bool, error) {
	v := ethtoolValue{cmd: ethtoolGTXCSUM}
	err := ethtool(dev, &v)
	return v.data != 0, err
}

// setGRO is `ethtool -K dev gro on|off`.
func setGRO(dev string, on bool) error {
	v := ethtoolValue{cmd: ethtoolSGRO}
	if on {
		v.data = 1
	}
	return ethtool(dev, &v)
}

// GRO is whether `ethtool -k dev` shows generic-receive-offload on, for
// dev in the calling thread's namespace.
func GRO(dev string) (bool, error) {
	v := ethtoolValue{cmd: ethtoolGGRO}
	err := ethtool(dev, &v)
	return v.data != 0, err
}
