package udp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SteerSmall has the kernel hand every datagram of at most max bytes of payload to prio and
// all others to main. Both must listen on one address with Options.ReusePort, main first:
// the classic BPF program attached to their SO_REUSEPORT group returns the index of the
// socket in the group, which is the order they joined it. A datagram the program cannot
// place (it always can) would go by the kernel's hash. Small datagrams (a ping, an ACK, a
// handshake) then never wait in main's receive queue behind a bulk transfer.
func SteerSmall(main, prio Conn, max int) error {
	m, ok1 := main.(*Socket)
	p, ok2 := prio.(*Socket)
	if !ok1 || !ok2 {
		return fmt.Errorf("udp: steering needs two sockets of this package, not %T and %T", main, prio)
	}
	if m.local != p.local {
		return fmt.Errorf("udp: steering needs one address, not %s and %s", m.local, p.local)
	}
	// The kernel runs the program with the UDP header pulled, so the length is the payload's.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_LEN},
		{Code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, Jt: 1, Jf: 0, K: uint32(max)},
		{Code: unix.BPF_RET | unix.BPF_K, K: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	var serr error
	if err := m.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	}); err != nil {
		return fmt.Errorf("udp: steering: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("udp: SO_ATTACH_REUSEPORT_CBPF: %w", serr)
	}
	return nil
}
