package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/cert/authority/pgstore"
	"github.com/meshnode/meshnode/internal/pgtest"
	"github.com/meshnode/meshnode/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// replicaSet is n `mesh-cert serve` processes on one PostgreSQL database, each with its own
// ca.yml, state_dir and admin socket, sharing the CA files and (copied) tls.pem and
// service.key, as docs/GETTING-STARTED.md's high-availability section sets them up.
type replicaSet struct {
	bin     string
	dir     string
	dsn     string
	configs []string
	urls    []string
	procs   []*serveProc
}

func newReplicaSet(t *testing.T, c *pgtest.Cluster, n int, certLife string) *replicaSet {
	t.Helper()
	rs := &replicaSet{bin: buildMeshCert(t), dir: t.TempDir(), dsn: c.CreateDB(t)}
	p := func(n string) string { return filepath.Join(rs.dir, n) }
	mustOK(t, meshCert(t, time.Now(), "ca", "-name", "Acme", "-ips", "10.42.0.0/16", "-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	// The DSN comes from a file (as a systemd credential would hand it over), not ca.yml.
	if err := os.WriteFile(p("dsn"), []byte(rs.dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var listens []string
	for range n {
		a := freeLoopbackAddr(t)
		listens = append(listens, a)
		rs.urls = append(rs.urls, "https://"+a)
	}
	for i := range n {
		rd := p(fmt.Sprint("r", i))
		yml := fmt.Sprintf(`listen: %s
urls: [%s]
state_dir: state
store: {type: postgres, dsn_file: ../dsn}
ca:
  - {crt: ../ca.crt, key: ../ca.key}
lighthouses:
  - {vpn_ip: 10.42.0.1, addrs: ["127.0.0.1:4242"]}
cidrs:
  mesh:
    cidr: 10.42.0.0/16
    children:
      servers: {cidr: 10.42.0.0/20}
durations: {cert: %s}
enroll: {rate: -1}
`, listens[i], strings.Join(rs.urls, ", "), certLife)
		must(t, os.MkdirAll(rd, 0o700))
		must(t, os.WriteFile(filepath.Join(rd, "ca.yml"), []byte(yml), 0o600))
		rs.configs = append(rs.configs, filepath.Join(rd, "ca.yml"))
	}
	// The first replica makes the identity (and the schema); the others get copies.
	mustOK(t, meshCertMigrating(t, rs.configs[0]))
	for i := 1; i < n; i++ {
		sd := filepath.Join(filepath.Dir(rs.configs[i]), "state")
		must(t, os.MkdirAll(sd, 0o700))
		for _, f := range []string{"tls.pem", "service.key"} {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(rs.configs[0]), "state", f))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(sd, f), b, 0o600))
		}
	}
	for _, cfg := range rs.configs {
		rs.procs = append(rs.procs, startServe(t, rs.bin, cfg))
	}
	return rs
}

// meshCertMigrating creates the schema the way an operator would before anything else.
func meshCertMigrating(t *testing.T, config string) result {
	t.Helper()
	if r := meshCert(t, time.Now(), "store", "upgrade", "-config", config); r.code != 0 {
		return r
	}
	return meshCert(t, time.Now(), "list", "-config", config) // makes tls.pem and service.key, binds them
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// store opens the replicas' database directly, as the checks below read it.
func (rs *replicaSet) store(t *testing.T) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), rs.dsn, pgstore.Options{})
	must(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// checkIntegrity: every certificate on record has exactly one issuing audit entry and the
// other way round, no renewal counter was accepted twice for a host, no two hosts share an
// address, audit sequence numbers run 1..n without a gap.
func checkIntegrity(t *testing.T, s authority.Store) (issued int) {
	t.Helper()
	d, err := authority.Dump(s)
	must(t, err)
	auditedCert := map[string]int{}
	counters := map[string]bool{}
	for i, e := range d.Audit {
		if e.Seq != uint64(i+1) {
			t.Errorf("audit entry %d has seq %d", i+1, e.Seq)
		}
		if e.Action != "enroll" && e.Action != "renew" {
			continue
		}
		auditedCert[e.Fingerprint]++
		if e.Action == "renew" {
			c := e.Host + " " + strings.Fields(e.Detail)[1]
			if counters[c] {
				t.Errorf("renewal %s accepted twice", c)
			}
			counters[c] = true
		}
	}
	for _, c := range d.Certs {
		if auditedCert[c.Fingerprint] != 1 {
			t.Errorf("cert %s of %s has %d issuing audit entries", c.Fingerprint, c.Host, auditedCert[c.Fingerprint])
		}
	}
	if len(auditedCert) != len(d.Certs) {
		t.Errorf("%d issuances audited, %d certs on record", len(auditedCert), len(d.Certs))
	}
	ips := map[netip.Addr]string{}
	for _, h := range d.Hosts {
		if o, ok := ips[h.IP.Addr()]; ok {
			t.Errorf("hosts %s and %s share %v", o, h.Name, h.IP)
		}
		ips[h.IP.Addr()] = h.Name
	}
	return len(d.Certs)
}

type node struct {
	name string
	r    renewer
}

// enrollHosts invites n hosts in parallel through every replica's admin socket in turn
// (concurrent IP allocation on several replicas) and enrolls each at one replica.
func (rs *replicaSet) enrollHosts(t *testing.T, n int) []*node {
	t.Helper()
	nodes := make([]*node, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cfg := rs.configs[i%len(rs.configs)]
			name := fmt.Sprintf("h%03d", i)
			r := meshCert(t, time.Now(), "invite", "-config", cfg, "-cidr", "servers", "-name", name)
			if r.code != 0 {
				t.Errorf("invite %s: %s", name, r.stderr)
				return
			}
			tok, err := authority.ParseToken(inviteToken(t, r.stdout))
			if err != nil {
				t.Error(err)
				return
			}
			c := client.New(rs.urls[(i+1)%len(rs.urls)], tok.Pin, client.Options{})
			e, err := c.Enroll(context.Background(), tok.Secret)
			if err != nil {
				t.Errorf("enroll %s: %v", name, err)
				return
			}
			nodes[i] = &node{name: name, r: renewer{certPEM: e.CertPEM, key: e.Key, serviceKey: e.ServiceKey, url: tok.URL, pin: tok.Pin}}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return nodes
}

// TestThreeReplicasKeepEveryGuaranteeOfOne: 50 parallel enrollments with one token, spread
// over three replicas, make exactly one certificate; 100 hosts invited in parallel through
// all three get 100 addresses; 300 parallel renewals (each host asking all three replicas at
// once, twice) reuse no counter, issue no cert unaudited, and give each host one new cert
// per round.
func TestThreeReplicasKeepEveryGuaranteeOfOne(t *testing.T) {
	testenv.SkipShort(t)
	rs := newReplicaSet(t, pgtest.Shared(t), 3, "1h")

	r := mustOK(t, meshCert(t, time.Now(), "invite", "-config", rs.configs[1], "-cidr", "servers", "-name", "race"))
	tok, err := authority.ParseToken(inviteToken(t, r.stdout))
	must(t, err)
	if got := client.SplitURLs(tok.URL); len(got) != 3 {
		t.Fatalf("token names %v, want the three replicas", got)
	}
	var wg sync.WaitGroup
	var won, used atomic.Int32
	start := make(chan struct{})
	for i := range 50 {
		wg.Go(func() {
			c := client.New(rs.urls[i%3], tok.Pin, client.Options{})
			<-start
			_, err := c.Enroll(context.Background(), tok.Secret)
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, authority.ErrTokenUsed):
				used.Add(1)
			default:
				t.Errorf("enrollment %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 || used.Load() != 49 {
		t.Fatalf("50 enrollments with one token over 3 replicas: %d succeeded, %d told it was used; want 1 and 49", won.Load(), used.Load())
	}

	nodes := rs.enrollHosts(t, 100)
	for round := range 2 {
		var renewed atomic.Int32
		t0 := time.Now()
		for _, n := range nodes {
			_, newKey, _ := cert.GenerateX25519()
			base := uint64(time.Now().UnixNano())
			certs := make([][]byte, 3)
			var hw sync.WaitGroup
			for j := range 3 {
				hw.Go(func() {
					c := client.New(rs.urls[j], n.r.pin, client.Options{})
					res, err := c.Renew(context.Background(), client.RenewParams{CertPEM: n.r.certPEM, Key: n.r.key,
						ServiceKey: n.r.serviceKey, NewKey: newKey, Counter: base + uint64(j)})
					switch {
					case err == nil:
						certs[j] = res.CertPEM
						renewed.Add(1)
					case errors.Is(err, authority.ErrReplay):
						// A later request that lost to one with a higher counter.
					default:
						t.Errorf("%s round %d at replica %d: %v", n.name, round, j, err)
					}
				})
			}
			wg.Go(func() {
				hw.Wait()
				var got []byte
				for _, c := range certs {
					if c != nil && got != nil && string(c) != string(got) {
						t.Errorf("%s got two different certificates in one round", n.name)
					}
					if c != nil {
						got = c
					}
				}
				if got == nil {
					t.Errorf("%s: no renewal succeeded in round %d", n.name, round)
					return
				}
				n.r.certPEM, n.r.key = got, newKey
			})
		}
		wg.Wait()
		t.Logf("round %d: 300 renewal requests over 3 replicas in %v, %d answered with the new cert", round, time.Since(t0).Round(time.Millisecond), renewed.Load())
	}
	// 1 raced + 100 enrolled + 2 rounds x 100 renewed.
	if got := checkIntegrity(t, rs.store(t)); got != 301 {
		t.Errorf("%d certificates on record, want 301", got)
	}
	// Every replica's admin socket shows the same inventory.
	// One clock for all three: the listing shows times relative to now, and on a loaded
	// machine the calls can be more than a second apart.
	listAt := time.Now()
	tree := mustOK(t, meshCert(t, listAt, "list", "-config", rs.configs[0], "--tree")).stdout
	for _, cfg := range rs.configs[1:] {
		if got := mustOK(t, meshCert(t, listAt, "list", "-config", cfg, "--tree")).stdout; got != tree {
			t.Errorf("list --tree differs between replicas:\nfirst:\n%s\nthis one:\n%s", tree, got)
		}
	}

	// A replica set up without copying the first one's key files is refused: its tokens
	// would carry another pin.
	stray := filepath.Join(rs.dir, "stray")
	must(t, os.MkdirAll(stray, 0o700))
	yml, err := os.ReadFile(rs.configs[0])
	must(t, err)
	must(t, os.WriteFile(filepath.Join(stray, "ca.yml"), yml, 0o600))
	r = meshCert(t, time.Now(), "list", "-config", filepath.Join(stray, "ca.yml"))
	if r.code != 1 || !strings.Contains(r.stderr, "same tls.pem and service.key") {
		t.Errorf("replica with its own identity: exit %d, %s", r.code, r.stderr)
	}
}

// TestRenewalStormSurvivesAKilledReplicaAndAPostgresRestart: 30 hosts renew in a loop with
// the replicas' URL list (failing over as nodes do) while one replica is SIGKILLed and,
// later, PostgreSQL itself crashes and restarts. Every host keeps renewing after both, and
// the database holds no half-written renewal: each cert audited once, no counter twice.
func TestRenewalStormSurvivesAKilledReplicaAndAPostgresRestart(t *testing.T) {
	testenv.SkipShort(t)
	c := pgtest.Start(t) // its own cluster: this test crashes it
	rs := newReplicaSet(t, c, 3, "4s")
	nodes := rs.enrollHosts(t, 30)
	all := strings.Join(rs.urls, ",")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var phase atomic.Int32 // 0 all up, 1 replica 0 killed, 2 PostgreSQL restarted
	renewedIn := make([][3]int, len(nodes))
	var otherErrs sync.Map
	var slowest [3]atomic.Int64
	for i, n := range nodes {
		wg.Go(func() {
			cl := client.New(all, n.r.pin, client.Options{Timeout: 5 * time.Second})
			for ctx.Err() == nil {
				t0 := time.Now()
				_, err := n.r.renew(ctx, cl)
				switch {
				case err == nil:
					p := phase.Load()
					renewedIn[i][p]++
					for d := int64(time.Since(t0)); d > slowest[p].Load(); {
						if slowest[p].CompareAndSwap(slowest[p].Load(), d) {
							break
						}
					}
					time.Sleep(300 * time.Millisecond)
				case errors.Is(err, authority.ErrRenewLimited):
					time.Sleep(200 * time.Millisecond) // too early: try again later, as nodes do
				default:
					// Unreachable replica, a database restarting (5xx), a reply lost: a
					// retry with the same new key, as the node's renewal loop does.
					otherErrs.Store(err.Error(), true)
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	must(t, rs.procs[0].cmd.Process.Signal(syscall.SIGKILL))
	rs.procs[0].cmd.Wait()
	phase.Store(1)
	// Longer than half a 4 s lifetime: a host that renewed just before the kill, its early
	// renewals used up, may renew again only from then on (the service's renewal bound).
	time.Sleep(3500 * time.Millisecond)
	c.Crash()
	time.Sleep(time.Second)
	must(t, c.Start())
	phase.Store(2)
	time.Sleep(4 * time.Second)
	cancel()
	wg.Wait()

	for i, n := range nodes {
		if renewedIn[i][1] == 0 || renewedIn[i][2] == 0 {
			t.Errorf("%s renewed %v times (all up, one replica killed, after the PostgreSQL restart)", n.name, renewedIn[i])
		}
	}
	otherErrs.Range(func(k, _ any) bool { t.Logf("error seen by a host (then retried): %s", k); return true })
	t.Logf("slowest successful renewal: %v all up, %v one replica killed, %v across the PostgreSQL restart",
		time.Duration(slowest[0].Load()).Round(time.Millisecond), time.Duration(slowest[1].Load()).Round(time.Millisecond), time.Duration(slowest[2].Load()).Round(time.Millisecond))
	issued := checkIntegrity(t, rs.store(t))
	t.Logf("%d certificates issued and audited across the kill and the restart", issued)
	// Every host still renews through the replicas left.
	for _, n := range nodes[:3] {
		cl := client.New(all, n.r.pin, client.Options{})
		if _, err := n.r.renew(context.Background(), cl); err != nil && !errors.Is(err, authority.ErrRenewLimited) {
			t.Errorf("%s after the storm: %v", n.name, err)
		}
	}
}

// TestStoreMigrateMovesABoltStoreIntoPostgresWithNothingLost: a bbolt store with invites,
// enrollments, a renewal and a revocation is copied; both compare equal, list --tree and
// the audit read the same from either, and a second migrate into the now full database is
// refused without touching it.
func TestStoreMigrateMovesABoltStoreIntoPostgresWithNothingLost(t *testing.T) {
	now := time.Now()
	dir, config := caService(t, now, "127.0.0.1:0")
	var toks []string
	for _, n := range []string{"web1", "web2", "db1", "laptop"} {
		toks = append(toks, inviteToken(t, mustOK(t, meshCert(t, now, "invite", "-config", config, "-cidr", "servers", "-name", n)).stdout))
	}
	// Enroll and renew in-process against the bbolt store (the service is stopped).
	cfg, err := authority.LoadConfig(config)
	must(t, err)
	svc, err := cfg.Open(func() time.Time { return now }, nil, time.Second)
	must(t, err)
	for _, tk := range toks[:3] {
		tok, _ := authority.ParseToken(tk)
		pub, priv, _ := cert.GenerateX25519()
		e, err := svc.Authority.Enroll(tok.Secret, pub)
		must(t, err)
		if tk == toks[0] {
			newPub, _, _ := cert.GenerateX25519()
			req := authority.RenewRequest{Cert: e.CertPEM, PublicKey: newPub, Nonce: make([]byte, 32), Counter: 1, Time: now.Unix()}
			must(t, authority.SignRenewRequest(&req, priv, svc.Authority.ServicePublicKey()))
			_, err := svc.Authority.Renew(req)
			must(t, err)
		}
	}
	svc.Close()
	mustOK(t, meshCert(t, now, "revoke", "-config", config, "db1"))
	boltTree := mustOK(t, meshCert(t, now, "list", "-config", config, "--tree")).stdout
	boltAudit := mustOK(t, meshCert(t, now, "list", "-config", config, "--audit")).stdout

	dsn := pgtest.NewDB(t)
	yml, err := os.ReadFile(config)
	must(t, err)
	pgConfig := filepath.Join(dir, "pg.yml")
	must(t, os.WriteFile(pgConfig, append(yml, []byte("store: {type: postgres, dsn_env: TEST_MESHNODE_DSN}\nadmin_socket: state/pg-admin.sock\n")...), 0o600))
	t.Setenv("TEST_MESHNODE_DSN", dsn)
	r := mustOK(t, meshCert(t, now, "store", "migrate", "-config", pgConfig))
	if !strings.Contains(r.stdout, "4 hosts, 4 certificates, 4 tokens, 1 revocations, 1 nonces, 9 audit entries, blocklist version 1") {
		t.Errorf("migrate said: %s", r.stdout)
	}
	if got := mustOK(t, meshCert(t, now, "list", "-config", pgConfig, "--tree")).stdout; got != boltTree {
		t.Errorf("list --tree differs:\nbbolt:\n%s\npostgres:\n%s", boltTree, got)
	}
	if got := mustOK(t, meshCert(t, now, "list", "-config", pgConfig, "--audit")).stdout; got != boltAudit {
		t.Errorf("audit differs:\nbbolt:\n%s\npostgres:\n%s", boltAudit, got)
	}
	r = meshCert(t, now, "store", "migrate", "-config", pgConfig)
	if r.code != 1 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("second migrate: exit %d, %s", r.code, r.stderr)
	}
	// The admin commands work on the database with no replica running.
	mustOK(t, meshCert(t, now, "invite", "-config", pgConfig, "-cidr", "servers", "-name", "after"))
	if r := meshCert(t, now, "store", "migrate", "-config", config); r.code != 1 || !strings.Contains(r.stderr, "type: postgres") {
		t.Errorf("migrate with a bbolt config: exit %d, %s", r.code, r.stderr)
	}
}
