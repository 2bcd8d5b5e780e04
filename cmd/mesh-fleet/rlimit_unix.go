//go:build unix

package main

import "syscall"

// raiseNoFile lifts the soft open-files limit to the hard one (a few sockets are enough
// for the fleet, but the target may share the limit through the script).
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
