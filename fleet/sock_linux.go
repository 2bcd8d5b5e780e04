//go:build linux

package fleet

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// socket is one UDP socket shared by many simulated hosts. It is bound to the wildcard
// address, so each host's datagrams can leave from the host's own loopback address
// (IP_PKTINFO's ipi_spec_dst), and the target's answers to any 127.x.y.z reach it.
type socket struct {
	conn *net.UDPConn
	port uint16
}

// sockBuf is asked for each socket's kernel buffers: a burst of answers to a few thousand
// handshakes or queries must not be dropped before the receive goroutine reads it.
const sockBuf = 8 << 20

func openSocket() (*socket, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// As root the FORCE variants pass net.core.[rw]mem_max; otherwise the plain
			// ones give what the limit allows.
			for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], sockBuf) != nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], sockBuf)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(nil, "udp4", "0.0.0.0:0")
	if err != nil {
		return nil, fmt.Errorf("fleet: socket: %w", err)
	}
	conn := pc.(*net.UDPConn)
	return &socket{conn: conn, port: uint16(conn.LocalAddr().(*net.UDPAddr).Port)}, nil
}

// sendFrom sends b to dst with src as the source address.
func (s *socket) sendFrom(b []byte, src netip.Addr, dst netip.AddrPort) error {
	info := unix.Inet4Pktinfo{Spec_dst: src.As4()}
	_, _, err := s.conn.WriteMsgUDPAddrPort(b, unix.PktInfo4(&info), dst)
	return err
}
