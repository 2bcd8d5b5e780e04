//go:build !linux

package tun

import "errors"

// Open is only implemented on Linux.
func Open(opts Options) (Device, error) {
	return nil, errors.New("tun: Open is only implemented on Linux")
}
