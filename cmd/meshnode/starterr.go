package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// unitCaps is what the installed meshnode@.service grants; the hints below name it so a
// reader knows both ways out (root, or the unit).
const unitCaps = "meshnode@.service runs it as root with CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE: systemctl enable --now meshnode@node"

// listenError says in one line why the UDP socket could not be opened. The socket layers
// each wrap the address in ("udp: listen A: listen udp4 A: bind: ..."), so only the errno is
// kept when there is one, with what to do about the common ones.
func listenError(host string, port int, err error) error {
	where := fmt.Sprintf("listen.host %s, listen.port %d", host, port)
	var errno syscall.Errno
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%s: UDP port already in use by another program or another meshnode "+
			"(`ss -ulpn 'sport = :%d'` shows which); stop it or choose another listen.port", where, port)
	case errors.Is(err, syscall.EACCES) && port < 1024:
		return fmt.Errorf("%s: permission denied: a port below 1024 needs root or CAP_NET_BIND_SERVICE (%s)", where, unitCaps)
	case errors.As(err, &errno):
		return fmt.Errorf("%s: %v", where, errno)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// tunError adds what to do when the TUN device may not be created: an unprivileged user
// gets EPERM from TUNSETIFF, after -test (which opens nothing) said the config is fine.
func tunError(dev string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			err = errno // the tun package's wrapping names the device again
		}
		return fmt.Errorf("tun.dev %q: %v: creating the TUN device needs root or CAP_NET_ADMIN; "+
			"run meshnode as root, or as a service (%s)", dev, err, unitCaps)
	}
	return fmt.Errorf("tun.dev %q: %w", dev, err)
}

// capNetAdminMissing reports, from /proc/self/status, that this process lacks the effective
// CAP_NET_ADMIN the daemon needs for its TUN device; false when it cannot tell.
func capNetAdminMissing() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			const capNetAdmin = 12 // linux/capability.h
			return err == nil && caps&(1<<capNetAdmin) == 0
		}
	}
	return false
}
