package e2e

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/overlay"
)

// Timing of the key-handling suite: certificates live 90 s (durations.cert, the whole
// validity) and are renewed at the default renewal.at, 2/3 of it, so about every 52 s.
const (
	keysCertLife = 90 * time.Second
	keysWindow   = 5 * time.Minute // traffic across renewals
	keysCutOff   = 60 * time.Second
)

// TestHostsJoinedByTokensRenewWithoutLossAndARevokedHostIsCutOff runs a CA service, a
// lighthouse and three hosts, each in its own namespace on one switch. No cert file is
// copied: every node is invited with `mesh-cert invite` (the hosts without -ip, so the service
// picks their addresses and must skip the lighthouse's) and joins with `meshnode enroll
// -token`. Certificates live 90 s and are renewed at 2/3 of that. For 5 minutes a ring of
// 10 pkt/s pings (h1→h2, h2→h3, h3→h1) and two TCP streams (h2→h1, h1→h3) run across every
// host's renewals with zero lost pings and unbroken in-order streams, and each renewal gives
// the host a new private key and a cert with the new public key (counted: at least 4
// distinct keys per host in the 5 minutes). Then `mesh-cert revoke h3` cuts h3's tunnels on
// the lighthouse, h1 and h2 within 60 s (because it is blocked, not because its cert ran
// out), h3's renewal is refused as revoked, and it cannot come back: a fresh invite under its
// name, its old unused token and its used token are all refused.
func TestHostsJoinedByTokensRenewWithoutLossAndARevokedHostIsCutOff(t *testing.T) {
	requireNamespaceSuite(t)
	testStart := time.Now()
	// The lighthouse is 10.42.0.1, h1 .2, h2 .3, h3 .4 (the addresses the service must pick).
	m := newTokenMesh(t, "k", "lighthouse", "h1", "h2", "h3")
	hosts := m.hosts
	lh, h1, h2, h3 := hosts[0], hosts[1], hosts[2], hosts[3]
	meshnode := m.meshnode

	// The CA service.
	m.makeCA("keys e2e CA", "ca")
	m.writeCAConfig(tokenOneCA, keysCertLife)
	svc := m.startService()

	// Invite: the hosts first and without -ip, so the first suggestion would be the
	// lighthouse's 10.42.0.1 if the service did not skip it; h3 twice, which leaves its first
	// token unused (superseded) for the re-enrollment check at the end; the lighthouse by its
	// address.
	tokens := map[*tokenHost]string{}
	var h3Unused string
	for _, h := range []*tokenHost{h1, h2, h3} {
		tokens[h] = m.invite(h)
	}
	h3Unused, tokens[h3] = tokens[h3], m.invite(h3)
	tokens[lh] = m.invite(lh, "-ip", lh.overlay)

	// Enroll and start: the only way a node gets its credentials.
	for _, h := range hosts {
		out := m.enroll(h, tokens[h], tokenRenewal)
		t.Logf("%s: %s", h.name, strings.TrimSpace(out))
		if st, err := os.Stat(filepath.Join(h.dir, "host.key")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: host.key %v %v", h.name, st, err)
		}
		// The address the service chose is the one we expect (the lighthouse's skipped).
		c := m.readCert(h)
		if got := c.VpnIP().String(); got != h.overlay {
			t.Fatalf("%s was given %s, want %s", h.name, got, h.overlay)
		}
		if life := c.Details.NotAfter.Sub(c.Details.NotBefore); life != keysCertLife {
			t.Fatalf("%s: cert valid %v – %v (%v), want %v", h.name, c.Details.NotBefore, c.Details.NotAfter, life, keysCertLife)
		}
		m.start(h)
	}
	m.waitRenewalScheduled(hosts)
	ring := [][2]*tokenHost{{h1, h2}, {h2, h3}, {h3, h1}}
	for _, p := range ring {
		for _, d := range [][2]*tokenHost{p, {p[1], p[0]}} {
			if _, err := d[0].ns.WaitPing(tunnelUpTimeout, d[1].overlay); err != nil {
				t.Fatalf("%s cannot reach %s through the lighthouse: %v\n%s\n%s", d[0].name, d[1].name, err, d[0].proc.Tail(20), d[1].proc.Tail(20))
			}
		}
	}
	t.Logf("set up in %v", time.Since(testStart).Round(time.Second))

	// Watch every node's key file and certificate: both must change at each renewal.
	w := newKeyWatch(t, hosts)
	// And what the peers see: every 5 s, the cert fingerprint each node's tunnels carry for
	// its peers, so a renewal is seen to reach the peers live, not just the disk.
	seen := newPeerWatch(t, meshnode, hosts)

	// Two TCP streams (a counter every 20 ms) that must stay unbroken and in order.
	type stream struct {
		from, to *tokenHost
		srv, cli *netns.Process
	}
	streams := []*stream{{from: h2, to: h1}, {from: h1, to: h3}}
	for i, s := range streams {
		addr := s.to.overlay + ":7000"
		s.srv = s.to.ns.Start(t, fmt.Sprintf("stream%d-serve", i), os.Args[0], "-test.run=^TestKeysStreamHelper$", "-keys.stream=serve,"+addr)
		if err := s.srv.WaitLog(10*time.Second, "stream listening"); err != nil {
			t.Fatalf("%v\n%s", err, s.srv.Log())
		}
		s.cli = s.from.ns.Start(t, fmt.Sprintf("stream%d-send", i), os.Args[0], "-test.run=^TestKeysStreamHelper$",
			"-keys.stream=send,"+addr+","+keysWindow.String())
	}

	// The ring of pings, 10 pkt/s each, for the whole window.
	pings := int(keysWindow / (100 * time.Millisecond))
	renewalsBefore := make([]int, len(hosts))
	for i, h := range hosts {
		renewalsBefore[i] = strings.Count(h.proc.Log(), "certificate renewed")
	}
	start := time.Now()
	pingOut := make([]string, len(ring))
	pingErr := make([]error, len(ring))
	var pingWG sync.WaitGroup
	for i, p := range ring {
		pingWG.Add(1)
		go func() {
			defer pingWG.Done()
			pingOut[i], pingErr[i] = p[0].ns.RunTimeout(keysWindow+60*time.Second, "ping", "-n", "-i", "0.1", "-c", strconv.Itoa(pings), "-W", "1", p[1].overlay)
		}()
	}
	pingWG.Wait()
	took := time.Since(start)
	renewals := make([]int, len(hosts))
	for i, h := range hosts {
		renewals[i] = strings.Count(h.proc.Log(), "certificate renewed") - renewalsBefore[i]
	}
	keyFiles, certKeys := w.stop() // after counting, so every counted renewal's files are seen
	peerCerts, statusErrs := seen.stop()

	for i, p := range ring {
		received := pingReceived(pingOut[i])
		t.Logf("ping %s -> %s: %d/%d in %v (%s)", p[0].name, p[1].name, received, pings, took.Round(time.Second), lineWith(pingOut[i], "rtt"))
		if received != pings {
			t.Errorf("%s -> %s lost %d of %d pings across renewals (%v)\n%s\n%s:\n%s\n%s:\n%s", p[0].name, p[1].name, pings-received, pings,
				pingErr[i], lastLines(pingOut[i], 5), p[0].name, p[0].proc.Tail(30), p[1].name, p[1].proc.Tail(30))
		}
	}
	for i, h := range hosts {
		t.Logf("%s: %d renewals in %v; %d distinct private keys, %d distinct cert public keys", h.name, renewals[i],
			took.Round(time.Second), len(keyFiles[i]), len(certKeys[i]))
		if renewals[i] < 4 {
			t.Errorf("%s renewed %d times in %v, want at least 4 (every ~%v)\n%s", h.name, renewals[i], took.Round(time.Second),
				keysCertLife*2/3, h.proc.Tail(20))
		}
		// The key at the start plus a new one per renewal.
		if len(keyFiles[i]) < max(4, renewals[i]+1) || len(certKeys[i]) < max(4, renewals[i]+1) {
			t.Errorf("%s: %d private keys and %d cert keys for %d renewals: the key did not change each time",
				h.name, len(keyFiles[i]), len(certKeys[i]), renewals[i])
		}
	}
	// The peers took up every new cert: each node in the ring, the lighthouse and the hosts
	// saw the other's tunnel carry a new cert after each renewal (all but possibly one in the
	// last seconds), and end on the one the other has on disk now.
	if statusErrs > 0 {
		t.Logf("%d status calls failed while watching the peers' certs", statusErrs)
	}
	watched := slices.Clone(ring)
	for _, h := range []*tokenHost{h1, h2, h3} {
		// Both ways with the lighthouse: a renewed lighthouse must move its tunnels too.
		watched = append(watched, [2]*tokenHost{lh, h}, [2]*tokenHost{h, lh})
	}
	for _, p := range watched {
		a, b := p[0], p[1]
		bi := slices.Index(hosts, b)
		n := len(peerCerts[slices.Index(hosts, a)][b.overlay])
		t.Logf("%s saw %d certs of %s on its tunnel", a.name, n, b.name)
		if n < renewals[bi] {
			t.Errorf("%s saw %d certs of %s on its tunnel in %v, but %s renewed %d times: a renewal did not reach it",
				a.name, n, b.name, took.Round(time.Second), b.name, renewals[bi])
		}
		err := netns.Eventually(30*time.Second, time.Second, func() error {
			want := m.readCert(b).Fingerprint()
			got, err := peerFingerprints(meshnode, a)
			if err != nil {
				return err
			}
			if got[b.overlay] != want {
				return fmt.Errorf("%s's tunnel to %s carries %.16s, %s's current cert is %.16s", a.name, b.name, got[b.overlay], b.name, want)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	for _, s := range streams {
		if err := s.cli.Wait(60 * time.Second); err != nil {
			t.Errorf("TCP stream %s -> %s sender: %v\n%s", s.from.name, s.to.name, err, s.cli.Log())
		}
		if err := s.srv.Wait(60 * time.Second); err != nil {
			t.Errorf("TCP stream %s -> %s receiver: %v\n%s", s.from.name, s.to.name, err, s.srv.Log())
		}
		sent, got := strings.TrimSpace(lineWith(s.cli.Log(), "stream sent")), strings.TrimSpace(lineWith(s.srv.Log(), "stream ok"))
		t.Logf("TCP stream %s -> %s across renewals: %s; %s", s.from.name, s.to.name, sent, got)
		if sent == "" || !strings.HasPrefix(got, sent+" ") {
			t.Errorf("TCP stream %s -> %s broken: sender %q, receiver %q", s.from.name, s.to.name, sent, got)
		}
	}
	if t.Failed() {
		return
	}

	// Revoke h3. Its cert at that moment would stay valid a while yet: the cut must come
	// from the blocklist, before that expiry.
	h3Cert := m.readCert(h3)
	out := m.revoke(h3.name)
	revoked := time.Now()
	t.Logf("%s (h3's cert would expire in %v)", strings.TrimSpace(out), h3Cert.Details.NotAfter.Sub(revoked).Round(100*time.Millisecond))
	peers := []*tokenHost{lh, h1, h2}
	cut := make(map[*tokenHost]time.Duration)
	err := netns.Eventually(keysCutOff, 250*time.Millisecond, func() error {
		for _, h := range peers {
			if _, ok := cut[h]; !ok && !hasPeer(t, meshnode, h, h3.overlay) {
				cut[h] = time.Since(revoked)
			}
		}
		if len(cut) < len(peers) {
			return fmt.Errorf("%d of %d peers still have a tunnel to h3", len(peers)-len(cut), len(peers))
		}
		return nil
	})
	for _, h := range peers {
		if d, ok := cut[h]; ok {
			t.Logf("%s: tunnel to h3 gone %v after the revocation", h.name, d.Round(100*time.Millisecond))
		}
	}
	if err != nil {
		for _, h := range peers {
			if _, ok := cut[h]; !ok {
				t.Errorf("%s still has a tunnel to h3 %v after the revocation\n%s", h.name, keysCutOff, h.proc.Tail(20))
			}
		}
		t.FailNow()
	}
	for _, h := range peers {
		// Closed by the blocklist (at once when it is applied, or by the once-a-second
		// validity check), not for another reason.
		log := h.proc.Log()
		if logLine(log, "closing tunnel: peer certificate revoked", "peer=h3") == "" &&
			logLine(log, "closing tunnel: peer certificate no longer valid", "peer=h3", "blocked") == "" {
			t.Errorf("%s did not log closing the tunnel to h3 because it is revoked:\n%s", h.name, h.proc.Tail(20))
		}
		if !revoked.Add(cut[h]).Before(h3Cert.Details.NotAfter) {
			t.Errorf("%s cut h3 only when its cert expired, not at its revocation", h.name)
		}
	}
	// It stays cut both ways (h3 keeps trying to handshake), while the others still talk.
	for range 5 {
		time.Sleep(time.Second)
		for _, h := range peers {
			if h.ns.Ping(h3.overlay) == nil || h3.ns.Ping(h.overlay) == nil {
				t.Fatalf("h3 and %s reach each other again after the revocation", h.name)
			}
		}
	}
	for _, d := range [][2]*tokenHost{{h1, h2}, {h2, h1}, {h1, lh}, {h2, lh}} {
		if err := d[0].ns.Ping(d[1].overlay); err != nil {
			t.Errorf("%s lost %s after h3's revocation: %v", d[0].name, d[1].name, err)
		}
	}

	// h3 cannot renew: its next renewal (due at most ~2/3 of a lifetime after the last) is
	// refused by the service as revoked.
	if err := h3.proc.WaitLog(keysCertLife, "certificate renewal refused: this host is revoked"); err != nil {
		t.Errorf("h3 was not refused a renewal: %v\n%s", err, h3.proc.Tail(20))
	} else {
		t.Logf("h3: %s", logLine(h3.proc.Log(), "certificate renewal refused"))
	}
	if line := logLine(svc.Log(), "renewal refused"); !strings.Contains(line, "revoked") {
		t.Errorf("the service did not refuse h3's renewal as revoked: %q", line)
	}
	// Nor re-enroll: the admin cannot invite the name again, and every token it ever had
	// (the unused superseded one and the one it enrolled with) is refused as revoked.
	if out, err := exec.Command(m.meshCert, "invite", "-config", m.caYML, "-cidr", "servers", "-name", h3.name).CombinedOutput(); err == nil || !strings.Contains(string(out), "revoked") {
		t.Errorf("invite of the revoked h3: %v\n%s", err, out)
	}
	for what, tok := range map[string]string{"old unused token": h3Unused, "enrollment token": tokens[h3]} {
		again := filepath.Join(h3.dir, "again-"+strings.ReplaceAll(what, " ", "-"))
		if err := os.MkdirAll(again, 0o700); err != nil {
			t.Fatal(err)
		}
		out, err := m.runEnroll(h3, tok, filepath.Join(again, "node.yml"), tokenRenewal)
		if err == nil || !strings.Contains(out, "revoked") {
			t.Errorf("re-enrollment of h3 with its %s: %v\n%s", what, err, out)
		} else {
			t.Logf("h3 re-enrolling with its %s: %s", what, lastLines(strings.TrimSpace(out), 1))
		}
		if _, err := os.Stat(filepath.Join(again, "host.crt")); err == nil {
			t.Errorf("a refused enrollment with the %s wrote a certificate", what)
		}
	}
	t.Logf("whole test: %v", time.Since(testStart).Round(time.Second))
}

// keyWatch polls every node's private key file and certificate and collects the distinct
// keys each one had.
type keyWatch struct {
	hosts              []*tokenHost
	keyFiles, certKeys []map[[32]byte]bool
	done               chan struct{}
	wg                 sync.WaitGroup
}

func newKeyWatch(t *testing.T, hosts []*tokenHost) *keyWatch {
	w := &keyWatch{hosts: hosts, done: make(chan struct{})}
	for range hosts {
		w.keyFiles = append(w.keyFiles, map[[32]byte]bool{})
		w.certKeys = append(w.certKeys, map[[32]byte]bool{})
	}
	w.poll()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			w.poll()
		}
	}()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			close(w.done)
		}
		w.wg.Wait()
	})
	return w
}

func (w *keyWatch) poll() {
	for i, h := range w.hosts {
		if b, err := os.ReadFile(filepath.Join(h.dir, "host.key")); err == nil {
			w.keyFiles[i][sha256.Sum256(b)] = true
		}
		if b, err := os.ReadFile(filepath.Join(h.dir, "host.crt")); err == nil {
			if c, _, err := cert.UnmarshalPEM(b); err == nil {
				w.certKeys[i][sha256.Sum256(c.Details.PublicKey)] = true
			}
		}
	}
}

// stop ends the polling, polls once more and returns what was seen.
func (w *keyWatch) stop() (keyFiles, certKeys []map[[32]byte]bool) {
	close(w.done)
	w.wg.Wait()
	w.poll()
	return w.keyFiles, w.certKeys
}

// peerFingerprints asks a node's daemon for the cert fingerprint of each of its tunnels, by
// the peer's VPN IP.
func peerFingerprints(meshnode string, h *tokenHost) (map[string]string, error) {
	out, err := h.ns.RunTimeout(10*time.Second, meshnode, "status", "-json", "-control", h.sock)
	if err != nil {
		return nil, fmt.Errorf("%s: status: %v: %s", h.name, err, out)
	}
	var st overlay.ControlStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("%s: status -json: %v: %s", h.name, err, out)
	}
	m := make(map[string]string, len(st.Peers))
	for _, p := range st.Peers {
		m[p.VpnIP.String()] = p.Fingerprint
	}
	return m, nil
}

// peerWatch collects, every 5 s, the distinct cert fingerprints each node's tunnels carry
// for each peer.
type peerWatch struct {
	meshnode string
	hosts    []*tokenHost
	seen     []map[string]map[string]bool // node -> peer VPN IP -> fingerprints
	errs     int
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

func newPeerWatch(t *testing.T, meshnode string, hosts []*tokenHost) *peerWatch {
	w := &peerWatch{meshnode: meshnode, hosts: hosts, done: make(chan struct{})}
	for range hosts {
		w.seen = append(w.seen, map[string]map[string]bool{})
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			w.poll()
			select {
			case <-w.done:
				return
			case <-time.After(5 * time.Second):
			}
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *peerWatch) poll() {
	for i, h := range w.hosts {
		fps, err := peerFingerprints(w.meshnode, h)
		if err != nil {
			w.errs++
			continue
		}
		for ip, fp := range fps {
			if w.seen[i][ip] == nil {
				w.seen[i][ip] = map[string]bool{}
			}
			w.seen[i][ip][fp] = true
		}
	}
}

func (w *peerWatch) stop() ([]map[string]map[string]bool, int) {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
	return w.seen, w.errs
}

var keysStream = flag.String("keys.stream", "", "internal to TestKeysStreamHelper: serve,ADDR or send,ADDR,DURATION")

// TestKeysStreamHelper is not a test: the keys suite runs this test binary inside its
// namespaces with -keys.stream to carry one long TCP connection over the overlay. The
// sender writes an 8-byte counter every 20 ms; the receiver checks that every counter
// arrives once and in order and reports the longest pause between two of them.
func TestKeysStreamHelper(t *testing.T) {
	if *keysStream == "" {
		t.Skip("helper process of TestHostsJoinedByTokensRenewWithoutLossAndARevokedHostIsCutOff")
	}
	parts := strings.Split(*keysStream, ",")
	var err error
	switch {
	case parts[0] == "serve" && len(parts) == 2:
		err = streamServe(parts[1])
	case parts[0] == "send" && len(parts) == 3:
		var d time.Duration
		if d, err = time.ParseDuration(parts[2]); err == nil {
			err = streamSend(parts[1], d)
		}
	default:
		err = fmt.Errorf("bad -keys.stream %q", *keysStream)
	}
	if err != nil {
		fmt.Println("stream error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func streamServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("stream listening on", addr)
	conn, err := ln.Accept()
	ln.Close()
	if err != nil {
		return err
	}
	defer conn.Close()
	var want uint64
	var maxGap time.Duration
	last := time.Now()
	buf := make([]byte, 8)
	for {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(conn, buf); err != nil {
			if errors.Is(err, io.EOF) {
				fmt.Printf("stream ok frames=%d maxgap=%v\n", want, maxGap.Round(time.Millisecond))
				return nil
			}
			return fmt.Errorf("after %d frames: %w", want, err)
		}
		if got := binary.BigEndian.Uint64(buf); got != want {
			return fmt.Errorf("frame %d carries %d", want, got)
		}
		want++
		now := time.Now()
		maxGap = max(maxGap, now.Sub(last))
		last = now
	}
}

func streamSend(addr string, d time.Duration) error {
	var conn net.Conn
	err := netns.Eventually(10*time.Second, 200*time.Millisecond, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	buf := make([]byte, 8)
	var n uint64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		binary.BigEndian.PutUint64(buf, n)
		conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write(buf); err != nil {
			return fmt.Errorf("after %d frames: %w", n, err)
		}
		n++
		time.Sleep(20 * time.Millisecond)
	}
	if err := conn.Close(); err != nil {
		return err
	}
	fmt.Printf("stream sent frames=%d\n", n)
	return nil
}
