//go:build !linux

package fleet

import (
	"errors"
	"net"
	"net/netip"
)

// The generator sends each simulated host's datagrams from its own loopback address with
// IP_PKTINFO, which it implements for Linux only.
type socket struct {
	conn *net.UDPConn
	port uint16
}

var errNotLinux = errors.New("fleet: the load generator runs on Linux only (it sends from many loopback addresses with IP_PKTINFO)")

func openSocket() (*socket, error) { return nil, errNotLinux }

func (s *socket) sendFrom([]byte, netip.Addr, netip.AddrPort) error { return errNotLinux }
