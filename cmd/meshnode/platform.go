package main

import (
	"fmt"
	"runtime"
)

// daemonGOOS is the system the daemon runs on; a variable so tests can play another one.
var daemonGOOS = runtime.GOOS

// Every GOOS builds (the subcommands and -test work anywhere), but the daemon's TUN device
// and UDP sockets exist only for Linux (overlay/tun, overlay/udp). Saying so before any
// config is read beats a "not implemented" error after enrollment has already written keys.
func checkDaemonPlatform(goos string) error {
	if goos == "linux" {
		return nil
	}
	return fmt.Errorf("the meshnode daemon runs only on Linux (amd64, arm64, arm), and this is %s/%s: "+
		"run it on a Linux host (here `meshnode -config FILE -test` checks a config, and mesh-cert works fully)", goos, runtime.GOARCH)
}
