package main

import (
	"net"
	"os"
)

// sdNotify sends state to systemd's notification socket (sd_notify(3)); outside a
// Type=notify unit NOTIFY_SOCKET is unset and it does nothing. meshnode@.service is
// Type=notify so that `systemctl enable --now` returns only once the control socket answers:
// the guide's next line may be `meshnode ping`.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	// A leading '@' names an abstract socket; the net package maps it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
