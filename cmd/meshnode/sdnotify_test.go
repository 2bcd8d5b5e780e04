package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonTellsSystemdWhenReady runs the daemon (no TUN device, loopback) as systemd runs
// a Type=notify unit: READY=1 arrives on NOTIFY_SOCKET, and by then the control socket is
// there, so a `meshnode ping` right after `systemctl enable --now` finds the daemon.
func TestDaemonTellsSystemdWhenReady(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))
	cfg := errorHost(t, "listen: {host: 127.0.0.1, port: 0}\ntun: {disabled: true}\n")
	sock := filepath.Join(dir, "meshnode.sock")
	done := make(chan int, 1)
	go func() {
		code, _, errOut := runCLI("-config", cfg, "-control", sock)
		if code != 0 {
			t.Errorf("daemon: exit %d\n%s", code, errOut)
		}
		done <- code
	}()
	_ = ln.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := ln.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notification %q, %v; want READY=1", buf[:n], err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("READY=1 came before the control socket: %v", err)
	}
	// serve has its SIGTERM handler in place before it notifies: this stops the daemon, not
	// the test binary.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not stop on SIGTERM")
	}
	unit, err := os.ReadFile(filepath.Join("..", "..", "examples", "systemd", "meshnode@.service"))
	if err != nil || !strings.Contains(string(unit), "\nType=notify\n") {
		t.Errorf("meshnode@.service is not Type=notify: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("sdNotify outside systemd: %v", err)
	}
}
