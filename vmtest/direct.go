package vmtest

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/xdplab/xdplab/kernels"
)

//go:embed guestinit/main.go
var guestInitSource []byte

// Modules the direct path needs before it can reach the host's root; their
// dependencies come from modules.dep. Built-in ones are skipped.
var bootModules = []string{"virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay"}

var initMu sync.Mutex

// guestInit returns a static build of guestinit, cached by source hash.
func guestInit() (string, error) {
	initMu.Lock()
	defer initMu.Unlock()
	sum := sha256.Sum256(guestInitSource)
	dir := filepath.Join(filepath.Dir(kernels.CacheDir()), "vmtest")
	bin := filepath.Join(dir, "guestinit-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	src, err := os.MkdirTemp("", "xdplab-guestinit-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module guestinit\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), guestInitSource, 0o644)
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the guest init: %w: %s", err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// moduleOrder resolves bootModules and their dependencies, dependencies
// first, as paths relative to the modules directory.
func moduleOrder(modDir string) ([]string, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("%w (was the kernel fetched with lab kernels fetch?)", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	byName := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		name := strings.TrimSuffix(filepath.Base(mod), ".ko")
		byName[strings.ReplaceAll(name, "-", "_")] = mod
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(m string) {
		if seen[m] {
			return
		}
		seen[m] = true
		for _, d := range deps[m] {
			visit(d)
		}
		order = append(order, m)
	}
	for _, n := range bootModules {
		if m, ok := byName[n]; ok {
			visit(m)
		} // else built in
	}
	return order, nil
}

// directCommand prepares QEMU with an initramfs holding the guest init, its
// configuration and the boot modules.
func directCommand(k *kernels.Kernel, args []string, o Options, tmp, accel string) (*launch, error) {
	initBin, err := guestInit()
	if err != nil {
		return nil, err
	}
	modDir, err := filepath.EvalSymlinks(k.ModulesDir())
	if err != nil {
		return nil, err
	}
	mods, err := moduleOrder(modDir)
	if err != nil {
		return nil, err
	}
	cfg := map[string]any{
		"args":        []string{"/bin/sh", "-c", shellJoin(args)},
		"env":         guestEnv(o),
		"cwd":         o.Cwd,
		"modules_dir": modDir,
		"release":     k.Release,
		"hostname":    "xdplab-vm",
		"kconfig":     k.Config(),
	}
	var files []cpioFile
	// Directories first: the kernel's unpacker does not create parents.
	for _, d := range []string{"dev", "proc", "sys", "lower", "upper", "newroot", "m"} {
		files = append(files, cpioFile{name: d, mode: 0o755 | cpioDir})
	}
	b, _ := os.ReadFile(initBin)
	files = append(files, cpioFile{name: "init", mode: 0o755, data: b})
	var modPaths []string
	for i, m := range mods {
		data, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			return nil, err
		}
		p := fmt.Sprintf("m/%02d-%s", i, filepath.Base(m))
		files = append(files, cpioFile{name: p, mode: 0o644, data: data})
		modPaths = append(modPaths, "/"+p)
	}
	cfg["modules"] = modPaths

	qargs := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35", "-accel", qemuAccel(accel),
		"-smp", fmt.Sprint(o.CPUs), "-m", o.Memory,
		"-kernel", k.Vmlinuz(),
		"-initrd", filepath.Join(tmp, "initrd"),
		"-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=root,mount_tag=root",
	}
	if accel == "kvm" {
		qargs = append(qargs, "-cpu", "host")
	} else {
		qargs = append(qargs, "-cpu", "max")
	}
	type dirCfg struct {
		Tag   string `json:"tag"`
		Guest string `json:"guest"`
		RW    bool   `json:"rw"`
	}
	var dirs []dirCfg
	for i, d := range allDirs(o) {
		tag := fmt.Sprintf("d%d", i)
		qargs = append(qargs, fsdevArgs(tag, d)...)
		dirs = append(dirs, dirCfg{Tag: tag, Guest: d.Guest, RW: d.RW})
	}
	cfg["dirs"] = dirs
	cj, _ := json.Marshal(cfg)
	files = append(files, cpioFile{name: "config.json", mode: 0o644, data: cj})
	if err := writeCpio(filepath.Join(tmp, "initrd"), files); err != nil {
		return nil, err
	}

	// Outputs travel over pipes QEMU opens as /dev/fd/N: stdout, stderr and
	// the kernel console stream as they come.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, _ := os.Pipe()
	klogR, klogW, _ := os.Pipe()
	ret := filepath.Join(tmp, "ret")
	qargs = append(qargs,
		"-chardev", "file,id=klog,path=/dev/fd/3", "-serial", "chardev:klog",
		"-device", "virtio-serial-pci",
		"-chardev", "file,id=out,path=/dev/fd/4", "-device", "virtserialport,chardev=out,name=stdout",
		"-chardev", "file,id=err,path=/dev/fd/5", "-device", "virtserialport,chardev=err,name=stderr",
		"-chardev", "file,id=ret,path="+qemuEscape(ret), "-device", "virtserialport,chardev=ret,name=ret",
		"-append", strings.Join([]string{
			"console=ttyS0", "earlyprintk=serial,ttyS0,115200", "panic=-1", "rdinit=/init",
			"loglevel=7", "printk.time=1", "nokaslr",
			"i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd", "mitigations=off",
			"rcupdate.rcu_expedited=1", guestKernelArgs,
		}, " "),
	)
	cmd := exec.Command("qemu-system-x86_64", qargs...)
	cmd.ExtraFiles = []*os.File{klogW, outW, errW}
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = nil, nil
	qemuLog := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = qemuLog, qemuLog
	return &launch{
		cmd: cmd, stdout: outR, stderr: errR, klogR: io.MultiReader(klogR, qemuTail{qemuLog}), klog: &syncBuffer{},
		retPath: ret, closeFDs: []*os.File{klogW, outW, errW},
	}, nil
}

// qemuTail appends QEMU's own messages (bad option, missing file) to the
// kernel log once the console pipe has closed, so they are not lost.
type qemuTail struct{ b *syncBuffer }

func (q qemuTail) Read(p []byte) (int, error) {
	s := q.b.Bytes()
	if len(s) == 0 {
		return 0, io.EOF
	}
	n := copy(p, "\nqemu: "+string(s))
	q.b.mu.Lock()
	q.b.b.Reset()
	q.b.mu.Unlock()
	return n, nil
}

func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// allDirs is the extra directories plus the results directory.
// fsdevArgs shares d with the guest over 9p as mount tag tag. A writable
// share keeps the guest's owners and modes in extended attributes
// (mapped-xattr), not on the host's files: with security_model=none QEMU,
// as root, created whatever the guest asked for, a set-uid root binary
// included, in a host directory. A read-only share passes modes through.
func fsdevArgs(tag string, d Dir) []string {
	model := "none,readonly=on"
	if d.RW {
		model = "mapped-xattr"
	}
	return []string{
		"-fsdev", fmt.Sprintf("local,id=%s,path=%s,security_model=%s,multidevs=remap", tag, qemuEscape(d.Host), model),
		"-device", fmt.Sprintf("virtio-9p-pci,fsdev=%s,mount_tag=%s", tag, tag),
	}
}

// qemuAccel is QEMU's -accel for accel. TCG runs single-threaded: with a
// thread per vCPU, a vCPU can run code another vCPU's kernel has just
// re-patched (x86 text_poke), and guests died of it: "Oops: int3" where
// 7.2 flips sched_clock's static key at boot (sched_clock_cpu,
// sched_clock_idle_wakeup_event; ~1 boot in 12 with two guests, on either
// backend) and a 5.10 soft lockup at the XDP dispatcher while it was
// re-patched. The matrix runs a guest per core, so little speed is lost.
func qemuAccel(accel string) string {
	if accel == "kvm" {
		return "kvm"
	}
	return "tcg,thread=single"
}

func allDirs(o Options) []Dir {
	var ds []Dir
	if o.ResultsDir != "" {
		ds = append(ds, Dir{Host: o.ResultsDir, RW: true})
	}
	ds = append(ds, o.Dirs...)
	for i := range ds {
		if ds[i].Guest == "" {
			ds[i].Guest = ds[i].Host
		}
	}
	return ds
}

// guestEnv is the command's environment in the guest: a clean base, the
// caller's additions, and XDPLAB_RESULTS.
func guestEnv(o Options) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin",
		"HOME=/root", "TERM=dumb", "LANG=C.UTF-8",
	}
	if o.ResultsDir != "" {
		env = append(env, "XDPLAB_RESULTS="+o.ResultsDir)
	}
	return append(env, o.Env...)
}

// cpio "newc" writer: all the initramfs needs.
const cpioDir = 0o40000

type cpioFile struct {
	name string
	mode uint32 // permission bits, | cpioDir for a directory
	data []byte
}

func writeCpio(path string, files []cpioFile) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	pad := func(n int) {
		for n%4 != 0 {
			w.WriteByte(0)
			n++
		}
	}
	hdr := func(ino int, name string, mode uint32, size int) {
		n, _ := fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
		w.WriteString(name)
		w.WriteByte(0)
		pad(n + len(name) + 1)
	}
	for i, fl := range files {
		mode := fl.mode
		if mode&cpioDir == 0 {
			mode |= 0o100000
		}
		hdr(i+1, fl.name, mode, len(fl.data))
		w.Write(fl.data)
		pad(len(fl.data))
	}
	hdr(0, "TRAILER!!!", 0, 0)
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
