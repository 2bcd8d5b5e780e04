package tun

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// steeringProgram is a BPF_PROG_TYPE_SOCKET_FILTER program for TUNSETSTEERINGEBPF. The
// kernel runs it for every packet routed into the device and takes its result modulo
// the number of queues as the queue: 1 (the priority queue) for a packet of at most
// SmallPacketMax bytes, else 0. Written out as instructions because it is six of them
// and a BPF toolchain or library would be a large dependency for that.
func steeringProgram() []byte {
	type insn struct {
		code uint8
		regs uint8 // dst in the low nibble, src in the high one
		off  int16
		imm  int32
	}
	prog := []insn{
		{code: unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W, regs: 0 | 1<<4, off: 0}, // r0 = skb->len (offset 0 of __sk_buff)
		{code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, regs: 0, off: 2, imm: SmallPacketMax},
		{code: unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K, regs: 0, imm: 1}, // r0 = 1
		{code: unix.BPF_JMP | unix.BPF_EXIT},
		{code: unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K, regs: 0, imm: 0}, // r0 = 0
		{code: unix.BPF_JMP | unix.BPF_EXIT},
	}
	b := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		b = append(b, in.code, in.regs, byte(in.off), byte(uint16(in.off)>>8),
			byte(in.imm), byte(in.imm>>8), byte(in.imm>>16), byte(in.imm>>24))
	}
	return b
}

// progLoadAttr is the head of union bpf_attr for BPF_PROG_LOAD; the kernel takes a shorter
// attribute and treats the rest as zero.
type progLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
}

// loadSteeringProgram loads steeringProgram and returns its descriptor.
func loadSteeringProgram() (int, error) {
	insns := steeringProgram()
	license := []byte("GPL\x00") // any string; the program calls no GPL-only helper
	attr := progLoadAttr{
		progType: unix.BPF_PROG_TYPE_SOCKET_FILTER,
		insnCnt:  uint32(len(insns) / 8),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		return -1, fmt.Errorf("load BPF steering program: %w", errno)
	}
	return int(fd), nil
}

// steer attaches the steering program to the device through one of its queues. The
// device keeps its own reference, so the program's descriptor is closed here.
func steer(f *os.File) error {
	pfd, err := loadSteeringProgram()
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETSTEERINGEBPF, pfd)
	}); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("TUNSETSTEERINGEBPF: %w", ierr)
	}
	return nil
}

// fileOf gives the *os.File under a queue (water's and ours are both one).
func fileOf(q *Queue) (*os.File, error) {
	if q.off != nil {
		return q.off.f, nil
	}
	if f, ok := q.rw.(*os.File); ok {
		return f, nil
	}
	return nil, fmt.Errorf("tun: queue is a %T, not a file", q.rw)
}
