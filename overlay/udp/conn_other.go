//go:build !linux

package udp

import (
	"errors"
	"net/netip"
)

// Listen is only implemented on Linux.
func Listen(addr netip.AddrPort, opts Options) (Conn, error) {
	return nil, errors.New("udp: Listen is only implemented on Linux")
}

// SteerSmall is only implemented on Linux.
func SteerSmall(main, prio Conn, max int) error {
	return errors.New("udp: SteerSmall is only implemented on Linux")
}
