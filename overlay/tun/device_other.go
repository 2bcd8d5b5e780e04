//go:build !linux

package tun

import (
	"errors"
	"net/netip"
)

// Options describe the device to create; only Linux has a device implementation.
type Options struct {
	Name       string
	MTU        int
	Addr       netip.Prefix
	Routes     []netip.Prefix
	TxQueueLen int
	Queues     int
}

// Open is only implemented on Linux.
func Open(opts Options) (Device, error) {
	return nil, errors.New("tun: Open is only implemented on Linux")
}
