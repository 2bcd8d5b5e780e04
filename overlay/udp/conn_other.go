//go:build !linux

package udp

import (
	"errors"
	"net/netip"
)

// Options tune the socket; only Linux has a socket implementation.
type Options struct {
	ReadBuffer, WriteBuffer int
	Batch                   int
	ReusePort               bool
}

// Listen is only implemented on Linux.
func Listen(addr netip.AddrPort, opts Options) (Conn, error) {
	return nil, errors.New("udp: Listen is only implemented on Linux")
}
