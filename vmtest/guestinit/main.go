//go:build linux

// Command guestinit is PID 1 of the direct (lean) boot path: it loads the
// few modules needed for a 9p root, overlays the host's root file system,
// runs one command with stdout/stderr on virtio ports and reports its exit
// status. It replaces virtme-ng's bash init and udev, which cost most of a
// boot under emulation. vmtest builds it (static, standard library only)
// from this embedded source; it is not part of the lab binary.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"
)

// config is written by the host into the initramfs as /config.json.
type config struct {
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	Cwd        string   `json:"cwd"`
	Modules    []string `json:"modules"` // load order, paths inside the initramfs
	ModulesDir string   `json:"modules_dir"`
	Release    string   `json:"release"`
	Dirs       []struct {
		Tag   string `json:"tag"`
		Guest string `json:"guest"`
		RW    bool   `json:"rw"`
	} `json:"dirs"`
	Hostname string `json:"hostname"`
	// KConfig is the kernel's config on the host (seen at the same path in
	// the guest), installed as /boot/config-RELEASE as Debian installs it.
	KConfig string `json:"kconfig"`
}

func logf(format string, args ...any) {
	msg := fmt.Sprintf("xdplab-init: "+format+"\n", args...)
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		f.WriteString(msg)
		f.Close()
		return
	}
	os.Stderr.WriteString(msg)
}

func die(format string, args ...any) {
	logf("FATAL: "+format, args...)
	halt()
}

func halt() {
	syscall.Sync()
	// QEMU runs with -no-reboot, so a restart ends it at once; no ACPI needed.
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	select {}
}

func mount(src, dst, fstype string, flags uintptr, data string) {
	os.MkdirAll(dst, 0o755)
	if err := syscall.Mount(src, dst, fstype, flags, data); err != nil {
		die("mount %s on %s (%s, %s): %v", src, dst, fstype, data, err)
	}
}

// sysFinitModule is finit_module(2) on amd64 (the syscall package lacks it).
const sysFinitModule = 313

func loadModule(path string) {
	f, err := os.Open(path)
	if err != nil {
		die("%v", err)
	}
	defer f.Close()
	empty := []byte{0}
	_, _, e := syscall.Syscall(sysFinitModule, f.Fd(), uintptr(unsafe.Pointer(&empty[0])), 0)
	if e != 0 && e != syscall.EEXIST {
		die("finit_module %s: %v", path, e)
	}
}

// port finds the /dev node of the virtio serial port with the given name
// (udev would make /dev/virtio-ports/NAME; devtmpfs only has vportNpM).
func port(name string) string {
	m, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(p))
		}
	}
	return ""
}

func openPort(name string) *os.File {
	p := port(name)
	if p == "" {
		die("no virtio port %q", name)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		die("open %s: %v", p, err)
	}
	return f
}

// loopbackUp sets IFF_UP on lo, as any init would.
func loopbackUp() {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	var ifr [40]byte
	copy(ifr[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return
	}
	*(*uint16)(unsafe.Pointer(&ifr[16])) |= syscall.IFF_UP
	syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0])))
}

// switchRoot makes r the root of the mount namespace, as switch_root does
// (the initramfs cannot be pivot_root'ed away): a plain chroot leaves the
// command's root unequal to its namespace's, and the kernel then refuses
// it new user namespaces (EPERM), which tests that fork into namespaces
// need.
func switchRoot(r string) {
	for _, m := range []string{"/proc", "/sys", "/dev"} {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if err := os.Chdir(r); err != nil {
		die("chdir %s: %v", r, err)
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		die("move %s to /: %v", r, err)
	}
	if err := syscall.Chroot("."); err != nil {
		die("chroot: %v", err)
	}
	os.Chdir("/")
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "guestinit: only runs as PID 1 inside a vmtest guest")
		os.Exit(2)
	}
	mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	mount("proc", "/proc", "proc", 0, "")
	mount("sysfs", "/sys", "sysfs", 0, "")

	b, err := os.ReadFile("/config.json")
	if err != nil {
		die("%v", err)
	}
	var c config
	if err := json.Unmarshal(b, &c); err != nil {
		die("config: %v", err)
	}
	for _, m := range c.Modules {
		loadModule(m)
	}

	// The host's root, read-only over 9p, under a tmpfs overlay so the
	// guest can write anywhere without touching the host.
	mount("root", "/lower", "9p", syscall.MS_RDONLY, "trans=virtio,version=9p2000.L,access=any,msize=512000,cache=loose")
	mount("tmpfs", "/upper", "tmpfs", 0, "mode=0755")
	os.MkdirAll("/upper/u", 0o755)
	os.MkdirAll("/upper/w", 0o755)
	if err := syscall.Mount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w,xino=off"); err != nil {
		os.MkdirAll("/newroot", 0o755)
		mount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w")
	}
	r := "/newroot"
	mount("proc", r+"/proc", "proc", 0, "")
	mount("sysfs", r+"/sys", "sysfs", 0, "")
	mount("devtmpfs", r+"/dev", "devtmpfs", 0, "")
	mount("devpts", r+"/dev/pts", "devpts", 0, "gid=5,mode=620")
	mount("tmpfs", r+"/dev/shm", "tmpfs", 0, "mode=1777")
	// /tmp stays in the overlay: host files there are visible, as with vng.
	mount("tmpfs", r+"/run", "tmpfs", 0, "mode=0755")
	mount("cgroup2", r+"/sys/fs/cgroup", "cgroup2", 0, "")
	mount("bpf", r+"/sys/fs/bpf", "bpf", 0, "mode=0700")
	syscall.Mount("debugfs", r+"/sys/kernel/debug", "debugfs", 0, "")
	syscall.Mount("tracefs", r+"/sys/kernel/tracing", "tracefs", 0, "")
	if c.ModulesDir != "" {
		mount(r+c.ModulesDir, r+"/lib/modules/"+c.Release, "", syscall.MS_BIND, "")
	}
	if c.KConfig != "" {
		// A copy in the overlay, not a link: readers may check it is a file.
		if b, err := os.ReadFile(r + c.KConfig); err == nil {
			os.MkdirAll(r+"/boot", 0o755)
			os.WriteFile(r+"/boot/config-"+c.Release, b, 0o644)
		}
	}
	// What udev or systemd would make: /dev/fd and the std streams.
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		os.Symlink(target, r+"/dev/"+name)
	}
	for _, d := range c.Dirs {
		var fl uintptr
		if !d.RW {
			fl = syscall.MS_RDONLY
		}
		mount(d.Tag, r+d.Guest, "9p", fl, "trans=virtio,version=9p2000.L,access=any,msize=512000")
	}
	if c.Hostname != "" {
		syscall.Sethostname([]byte(c.Hostname))
	}
	loopbackUp()

	stdout, stderr, ret := openPort("stdout"), openPort("stderr"), openPort("ret")
	switchRoot(r)
	if err := os.Chdir(c.Cwd); err != nil {
		fmt.Fprintf(stderr, "xdplab-init: cd %s: %v; staying in /\n", c.Cwd, err)
		os.Chdir("/")
	}
	cmd := exec.Command(c.Args[0], c.Args[1:]...)
	cmd.Env = c.Env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	code := 0
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		} else {
			fmt.Fprintf(stderr, "xdplab-init: %v\n", err)
			code = 127
		}
	}
	w := bufio.NewWriter(ret)
	fmt.Fprintf(w, "%d\n", code)
	w.Flush()
	ret.Sync()
	stdout.Sync()
	stderr.Sync()
	halt()
}
