package vmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/xdplab/xdplab/kernels"
)

// vngArgs are the vng flags shared by runs and interactive shells.
// Writable directories are not among them: runs share them themselves
// (vngWritableDirs), shells through vng's --rwdir.
func vngArgs(k *kernels.Kernel, o Options, accel string) []string {
	a := []string{"--run", k.Vmlinuz(), "--cpus", fmt.Sprint(o.CPUs), "--memory", o.Memory, "--cwd", o.Cwd}
	if accel != "kvm" {
		// The direct path's CPU model: with vng's default (qemu64) a 5.10
		// guest locked up, both vCPUs stuck for minutes, one at the XDP
		// dispatcher's entry while the kernel re-patched it (BPF test runs
		// beside veth XDP), where the same tests pass on -cpu max.
		a = append(a, "--disable-kvm", "--qemu-opts=-cpu max -accel "+qemuAccel(accel))
	}
	for _, d := range allDirs(o) {
		if !d.RW {
			a = append(a, "--rodir="+d.Guest+"="+d.Host)
		}
	}
	return a
}

// vngWritableDirs shares the writable directories as the direct path does
// (fsdevArgs: vng's --rwdir passes the guest's modes, set-uid included, to
// the host's files) and returns the QEMU options and the guest lines that
// mount them.
func vngWritableDirs(o Options) (qemuOpts []string, mounts string) {
	var b strings.Builder
	for i, d := range allDirs(o) {
		if !d.RW {
			continue
		}
		tag := fmt.Sprintf("xdplabrw%d", i)
		qemuOpts = append(qemuOpts, fsdevArgs(tag, d)...)
		fmt.Fprintf(&b, "mkdir -p %[2]s && mount -t 9p -o trans=virtio,version=9p2000.L,access=any,msize=512000 %[1]s %[2]s || { echo 'xdplab: cannot mount %[2]s' >&2; exit 1; }\n", tag, shellQuote(d.Guest))
	}
	return qemuOpts, b.String()
}

// vngCommand prepares `vng --exec`. The kernel log comes out of an extra
// virtio console (hvc0): vng sends the serial console to /dev/null in
// script mode, and a second 8250 port stayed silent when tried.
func vngCommand(k *kernels.Kernel, args []string, o Options, tmp, accel string) (*launch, error) {
	// A file, not a pipe: vng starts QEMU through a subprocess that closes
	// inherited descriptors.
	klog := filepath.Join(tmp, "klog")
	// vng reports 255 both for `exit 255` and for a guest that died, so the
	// script also logs its status to the kernel log, which we capture.
	rwOpts, rwMounts := vngWritableDirs(o)
	script := fmt.Sprintf("%s%s%s\n(%s) </dev/null\nrc=$?\necho \"%s$rc\" > /dev/kmsg\nexit $rc\n",
		vngCompleteGuest(k), rwMounts, exportEnv(guestEnv(o)), shellJoin(args), exitMarker)
	// vng passes --exec's script on the kernel command line, which x86
	// cuts at 2048 bytes, dropping our console and vng's init= after it
	// (the guest then idles until the timeout). The guest sees the
	// host's root, so a file in our run directory does instead.
	scriptFile := filepath.Join(tmp, "script.sh")
	if err := os.WriteFile(scriptFile, []byte(script), 0o600); err != nil {
		return nil, err
	}
	a := vngArgs(k, o, accel)
	a = append(a, "--overlay-rwdir=/boot")
	wrapper, err := qemuWrapper(tmp)
	if err != nil {
		return nil, err
	}
	a = append(a, "--qemu", wrapper)
	if !o.VNGFullUdev {
		lean, err := leanGuestDirs(tmp)
		if err != nil {
			return nil, err
		}
		a = append(a, lean...)
	}
	a = append(a,
		"--qemu-opts=-chardev file,id=xdplabklog,path="+qemuEscape(klog)+" -device virtconsole,chardev=xdplabklog "+strings.Join(rwOpts, " "),
		"--append=console=hvc0 loglevel=7 "+guestKernelArgs,
		"--exec", "sh "+shellQuote(scriptFile))
	cmd := exec.Command("vng", a...)
	// vng's temporary files (initramfs, return-code file) land in our
	// per-run directory, removed whatever happens.
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	return &launch{cmd: cmd, klogFile: klog, klog: &syncBuffer{}}, nil
}

// guestKernelArgs go on every guest's kernel command line, both backends.
// no_timer_check skips the IO-APIC timer check that emulation fails.
// oops=panic turns any oops into a panic, which ends the VM (panic=-1,
// -no-reboot): an oops in a task otherwise leaves an idle guest that only
// the timeout ends, with the test half run.
const guestKernelArgs = "tsc=reliable no_timer_check oops=panic"

// vngCompleteGuest adds to vng's guest what the contract (package doc)
// promises and vng's init does not do: bpffs, /boot/config-RELEASE, /dev/fd.
func vngCompleteGuest(k *kernels.Kernel) string {
	var b strings.Builder
	b.WriteString("grep -q ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf -o mode=0700 bpf /sys/fs/bpf\n")
	if c := k.Config(); c != "" {
		fmt.Fprintf(&b, "[ -e /boot/config-%[1]s ] || cp %[2]s /boot/config-%[1]s\n", k.Release, shellQuote(c))
	}
	b.WriteString("[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd\n")
	// vng mounts an empty tmpfs on /var/log: give it the host's
	// directories back (owners and modes as there), since services open
	// their logs in them (nutcracker exited: no /var/log/nutcracker).
	for _, d := range hostLogDirs() {
		fmt.Fprintf(&b, "[ -d /var/log/%[1]s ] || install -d -o %[2]d -g %[3]d -m %[4]o /var/log/%[1]s\n", shellQuote(d.name), d.uid, d.gid, d.mode)
	}
	return b.String()
}

type logDir struct {
	name     string
	uid, gid uint32
	mode     uint32
}

// hostLogDirs are the directories directly under the host's /var/log.
func hostLogDirs() []logDir {
	ents, _ := os.ReadDir("/var/log")
	var ds []logDir
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.IsDir() {
			continue
		}
		d := logDir{name: e.Name(), mode: uint32(fi.Mode().Perm())}
		if fi.Mode()&os.ModeSetgid != 0 {
			d.mode |= 0o2000 // install -m takes the octal mode
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			d.uid, d.gid = st.Uid, st.Gid
		}
		ds = append(ds, d)
	}
	return ds
}

func exportEnv(env []string) string {
	var b strings.Builder
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ShellCommand returns an interactive `vng` for a person at a terminal, in
// the repository directory (o.Cwd); the caller wires up the terminal.
func ShellCommand(k *kernels.Kernel, o Options) (*exec.Cmd, error) {
	o.Backend = VNG
	o.defaults()
	if !k.Cached() {
		return nil, fmt.Errorf("%w: %s; run 'lab kernels fetch %s'", ErrNotCached, k.Name, k.Name)
	}
	if err := checkTools(VNG); err != nil {
		return nil, err
	}
	acc, _ := accel(o.KVM)
	a := vngArgs(k, o, acc)
	// A person's shell: vng mounts these itself, modes passed through.
	for _, d := range allDirs(o) {
		if d.RW {
			a = append(a, "--rwdir="+d.Guest+"="+d.Host)
		}
	}
	return exec.Command("vng", a...), nil
}

// virtioPortsRule is the one udev rule vng's script mode depends on: it
// makes the /dev/virtio-ports/NAME links its init looks for.
const virtioPortsRule = `SUBSYSTEM=="virtio-ports", KERNEL=="vport*", ATTR{name}=="?*", SYMLINK+="virtio-ports/$attr{name}"` + "\n"

// leanGuestDirs hides the host's udev rules and tmpfiles.d from the guest
// behind read-only mounts of our own: udev's coldplug with Debian's full
// rule set costs ~9 s under TCG, with this one rule ~2 s.
func leanGuestDirs(tmp string) ([]string, error) {
	rules := filepath.Join(tmp, "udev-rules")
	empty := filepath.Join(tmp, "empty")
	for _, d := range []string{rules, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(rules, "50-virtio-ports.rules"), []byte(virtioPortsRule), 0o644); err != nil {
		return nil, err
	}
	return []string{"--rodir=/usr/lib/udev/rules.d=" + rules, "--rodir=/usr/lib/tmpfiles.d=" + empty}, nil
}

// qemuWrapper writes a stand-in for qemu-system-x86_64 that kills QEMU
// when this process disappears. Our direct child gets a parent-death
// signal, but vng starts QEMU two processes further down, so without this a
// killed test binary would leave a hung guest running. The watcher must
// not hold QEMU's stdout: vng reads `qemu --version` through a pipe.
func qemuWrapper(tmp string) (string, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", err
	}
	p := filepath.Join(tmp, "qemu-system-x86_64")
	script := fmt.Sprintf(`#!/bin/sh
( while kill -0 %d && kill -0 $$; do sleep 1; done; kill -9 $$ ) </dev/null >/dev/null 2>&1 &
exec %s "$@"
`, os.Getpid(), shellQuote(qemu))
	return p, os.WriteFile(p, []byte(script), 0o755)
}
