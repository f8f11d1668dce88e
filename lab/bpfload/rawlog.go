package bpfload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// WithLog gives a refusal without a log its log. cilium/ebpf drops the log
// when the kernel answers EFAULT, which is how the verifier refuses too many
// pending branches ("The sequence of 8193 jumps is too complex":
// check_cond_jmp_op turns push_stack's failure into -EFAULT on every pinned
// kernel), so the program is loaded once more with the bpf syscall itself,
// only to read what the verifier said. spec's map references must be
// associated with loaded maps (asm.Instruction.AssociateMap).
func WithLog(spec *ebpf.ProgramSpec, err error) error {
	var ve *ebpf.VerifierError
	if err == nil || !errors.Is(err, unix.EFAULT) || errors.As(err, &ve) {
		return err
	}
	log, lerr := verifierLog(spec)
	if lerr != nil || len(log) == 0 {
		return err
	}
	// The cause cilium/ebpf gives ("hit verifier bug") misleads here.
	return &ebpf.VerifierError{Cause: fmt.Errorf("%w: the verifier gave up", unix.EFAULT), Log: log}
}

// verifierLog loads spec (its maps referenced by fd) with a statistics
// level verifier log and returns the log's lines.
func verifierLog(spec *ebpf.ProgramSpec) ([]string, error) {
	// Marshal takes only the named byte orders, not binary.NativeEndian.
	order := binary.ByteOrder(binary.LittleEndian)
	if binary.NativeEndian.Uint16([]byte{0, 1}) == 1 {
		order = binary.BigEndian
	}
	var insns bytes.Buffer
	if err := spec.Instructions.Marshal(&insns, order); err != nil {
		return nil, err
	}
	code := insns.Bytes()
	license := append([]byte(spec.License), 0)
	buf := make([]byte, 1<<20)
	// The head of union bpf_attr for BPF_PROG_LOAD; the kernel takes the
	// fields not given as zero.
	attr := struct {
		progType, insnCnt uint32
		insns, license    uint64
		logLevel, logSize uint32
		logBuf            uint64
	}{
		progType: uint32(spec.Type), insnCnt: uint32(len(code) / 8),
		insns: uint64(uintptr(unsafe.Pointer(&code[0]))), license: uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: uint32(ebpf.LogLevelStats), logSize: uint32(len(buf)), logBuf: uint64(uintptr(unsafe.Pointer(&buf[0]))),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	if errno == 0 {
		unix.Close(int(fd))
	}
	text := string(buf[:max(bytes.IndexByte(buf, 0), 0)])
	return strings.Split(strings.TrimRight(text, "\n"), "\n"), nil
}
