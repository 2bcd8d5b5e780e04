package overlay_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay"
)

// controlOf opens a control socket for host i of m in a fresh directory.
func controlOf(t *testing.T, m *mesh, i int, reload func() ([]string, error)) (*overlay.ControlServer, overlay.ControlClient) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "meshnode.sock")
	s, err := overlay.ListenControl(m.hosts[i].node, overlay.ControlOptions{Path: path, Reload: reload, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, overlay.ControlClient{Path: path, Timeout: 20 * time.Second}
}

func do(t *testing.T, c overlay.ControlClient, req overlay.ControlRequest) ([]overlay.ControlResponse, error) {
	t.Helper()
	var got []overlay.ControlResponse
	err := c.Do(context.Background(), req, func(r overlay.ControlResponse) { got = append(got, r) })
	return got, err
}

func TestControlSocketAnswersStatusPingListAndReload(t *testing.T) {
	m := newMesh(t, 3, "")
	reloads := 0
	s, c := controlOf(t, m, 0, func() ([]string, error) {
		reloads++
		return []string{"firewall: rules changed"}, nil
	})
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	// Ping by VPN IP establishes the tunnel; afterwards the name from the cert works too.
	got, err := do(t, c, overlay.ControlRequest{Cmd: "ping", Target: "10.42.0.2", Count: 2, IntervalMS: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || !strings.Contains(got[0].Note, "handshaking") {
		t.Fatalf("ping without a tunnel does not say it is making one: %+v", got)
	}
	got = got[1:]
	if len(got) != 3 || got[0].Probe == nil || got[0].Probe.Seq != 1 || got[1].Probe.Seq != 2 || got[2].Ping == nil {
		t.Fatalf("ping lines: %+v", got)
	}
	if sum := got[2].Ping; sum.Sent != 2 || sum.Received != 2 || sum.Name != "host2" || sum.MinMS <= 0 || sum.MaxMS < sum.MinMS {
		t.Fatalf("ping summary: %+v", sum)
	}
	got, err = do(t, c, overlay.ControlRequest{Cmd: "ping", Target: "HOST2", Count: 1})
	if err != nil || got[len(got)-1].Ping.Target.String() != "10.42.0.2" {
		t.Fatalf("ping by name: %v %+v", err, got)
	}
	if _, err := do(t, c, overlay.ControlRequest{Cmd: "ping", Target: "host3"}); err == nil || !strings.Contains(err.Error(), "unknown host host3") {
		t.Fatalf("ping by the name of a host without a tunnel: %v, want unknown host", err)
	}
	if _, err := do(t, c, overlay.ControlRequest{Cmd: "ping", Target: "host1"}); err == nil || !strings.Contains(err.Error(), "this host") {
		t.Fatalf("ping self: %v", err)
	}

	got, err = do(t, c, overlay.ControlRequest{Cmd: "status"})
	if err != nil {
		t.Fatal(err)
	}
	st := got[0].Status
	if st == nil || st.Name != "host1" || st.VpnIP.String() != "10.42.0.1" || st.Network.String() != "10.42.0.0/16" || st.Version != "test" {
		t.Fatalf("status: %+v", st)
	}
	if len(st.Peers) != 1 || st.Peers[0].Name != "host2" || !slices.Equal(st.Peers[0].Groups, []string{"mesh"}) ||
		st.Peers[0].Remote.String() != "198.18.0.2:4242" || st.Peers[0].Path != "direct" || st.Peers[0].Handshake.IsZero() ||
		st.Peers[0].LastRecv.IsZero() || st.Peers[0].CertNotAfter.IsZero() {
		t.Fatalf("status peers: %+v", st.Peers)
	}
	if _, ok := st.Drops["firewall_inbound"]; !ok {
		t.Fatalf("status drops lack the firewall counters: %v", st.Drops)
	}

	got, err = do(t, c, overlay.ControlRequest{Cmd: "list"})
	if err != nil {
		t.Fatal(err)
	}
	var ips, srcs []string
	for _, h := range got[0].Hosts {
		ips = append(ips, h.VpnIP.String())
		srcs = append(srcs, strings.Join(h.Sources, "+"))
		if h.Network.String() != "10.42.0.0/16" {
			t.Errorf("%s: network %s, want 10.42.0.0/16", h.VpnIP, h.Network)
		}
	}
	if !slices.Equal(ips, []string{"10.42.0.1", "10.42.0.2", "10.42.0.3"}) || !slices.Equal(srcs, []string{"self", "tunnel+static", "static"}) {
		t.Fatalf("list: %v %v", ips, srcs)
	}

	got, err = do(t, c, overlay.ControlRequest{Cmd: "reload"})
	if err != nil || reloads != 1 || got[0].Reload == nil || got[0].Reload.Changes[0] != "firewall: rules changed" {
		t.Fatalf("reload: %v %+v (reloads %d)", err, got, reloads)
	}
	if _, err := do(t, c, overlay.ControlRequest{Cmd: "frobnicate"}); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command: %v", err)
	}
}

func TestControlReloadErrorReachesTheClient(t *testing.T) {
	m := newMesh(t, 2, "")
	_, c := controlOf(t, m, 0, func() ([]string, error) { return nil, errors.New("node.yml:3: pki.cert: no such file") })
	if _, err := do(t, c, overlay.ControlRequest{Cmd: "reload"}); err == nil || !strings.Contains(err.Error(), "pki.cert") {
		t.Fatalf("reload error: %v", err)
	}
}

func TestControlPingOfAnUnreachableHostReportsLostProbes(t *testing.T) {
	m := newMesh(t, 2, "")
	m.stop(1)
	_, c := controlOf(t, m, 0, nil)
	got, err := do(t, c, overlay.ControlRequest{Cmd: "ping", Target: "10.42.0.2", Count: 1, TimeoutMS: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1].Probe.Error == "" || got[2].Ping.Received != 0 || got[2].Ping.Sent != 1 {
		t.Fatalf("ping of a stopped host: %+v", got)
	}
}

func TestControlSocketReplacesStaleSocketsButNotLiveOnesOrFiles(t *testing.T) {
	m := newMesh(t, 1, "")
	dir := t.TempDir()

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens: a crashed daemon's leftover
	s, err := overlay.ListenControl(m.hosts[0].node, overlay.ControlOptions{Path: stale})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	if _, err := overlay.ListenControl(m.hosts[0].node, overlay.ControlOptions{Path: stale}); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Fatalf("second daemon on a live socket: %v", err)
	}
	s.Close()
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := overlay.ListenControl(m.hosts[0].node, overlay.ControlOptions{Path: file}); err == nil {
		t.Fatal("a regular file at the socket path was replaced")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Fatal("the regular file was touched")
	}
}

func TestControlClientSaysWhenNoDaemonListens(t *testing.T) {
	c := overlay.ControlClient{Path: filepath.Join(t.TempDir(), "none.sock")}
	err := c.Do(context.Background(), overlay.ControlRequest{Cmd: "status"}, func(overlay.ControlResponse) {})
	if !errors.Is(err, overlay.ErrControlUnavailable) {
		t.Fatalf("got %v, want ErrControlUnavailable", err)
	}
}

func TestControlRejectsMalformedRequests(t *testing.T) {
	m := newMesh(t, 1, "")
	s, _ := controlOf(t, m, 0, nil)
	conn, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("not json\n"))
	b := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := conn.Read(b)
	if !strings.Contains(string(b[:n]), `"error":"bad request`) {
		t.Fatalf("malformed request answered with %q", b[:n])
	}
}
