package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/pgstore"
	"github.com/meshnode/meshnode/cert/authority/storetest"
	"github.com/meshnode/meshnode/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t testing.TB, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dsnOf remembers which database a store of the suite is on, for Reopen.
var dsnOf sync.Map

func TestPostgresStoreContract(t *testing.T) {
	storetest.Run(t, storetest.Factory{
		New: func(t *testing.T) authority.Store {
			dsn := pgtest.NewDB(t)
			s := open(t, dsn)
			dsnOf.Store(s, dsn)
			return s
		},
		Reopen: func(t *testing.T, s authority.Store) authority.Store {
			dsn, _ := dsnOf.Load(s)
			s.Close()
			s2 := open(t, dsn.(string))
			dsnOf.Store(s2, dsn)
			return s2
		},
	})
}

// TestStoresOnOneDatabaseConsumeATokenOnce: the contract's race, but between separate
// Stores (separate pools, as separate replicas have), where only the database serialises.
func TestStoresOnOneDatabaseConsumeATokenOnce(t *testing.T) {
	dsn := pgtest.NewDB(t)
	var stores []*pgstore.Store
	for range 3 {
		s := open(t, dsn)
		defer s.Close()
		stores = append(stores, s)
	}
	must(t, stores[0].Update(func(tx authority.Tx) error {
		return tx.PutToken(authority.TokenRecord{Hash: "h1", Host: "web1"})
	}))
	errUsed := errors.New("used")
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = stores[i%3].Update(func(tx authority.Tx) error {
				tok, ok, err := tx.Token("h1")
				if err != nil || !ok || tok.Used {
					return errors.Join(err, errUsed)
				}
				tok.Used = true
				if err := tx.PutToken(tok); err != nil {
					return err
				}
				_, err = tx.AppendAudit(authority.AuditEntry{Action: "enroll", Detail: fmt.Sprint(i)})
				return err
			})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else if !errors.Is(err, errUsed) {
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d updates over 3 stores consumed the token, want 1", ok, n)
	}
}

// TestConcurrentAuditAndCountersHaveNoGapsOrDuplicates: 200 updates over 3 stores, each
// appending an audit entry and half bumping the blocklist version: sequences 1..200 once
// each, the version exactly the number of bumps.
func TestConcurrentAuditAndCountersHaveNoGapsOrDuplicates(t *testing.T) {
	dsn := pgtest.NewDB(t)
	var stores []*pgstore.Store
	for range 3 {
		s := open(t, dsn)
		defer s.Close()
		stores = append(stores, s)
	}
	const n = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	seqs := map[uint64]int{}
	versions := map[uint64]bool{}
	for i := range n {
		wg.Go(func() {
			var seq, v uint64
			err := stores[i%3].Update(func(tx authority.Tx) error {
				var err error
				if i%2 == 0 {
					if v, err = tx.BumpBlocklistVersion(); err != nil {
						return err
					}
				}
				seq, err = tx.AppendAudit(authority.AuditEntry{Action: "x", Detail: fmt.Sprint(i)})
				return err
			})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			seqs[seq]++
			if v != 0 {
				if versions[v] {
					t.Errorf("blocklist version %d handed out twice", v)
				}
				versions[v] = true
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for s := uint64(1); s <= n; s++ {
		if seqs[s] != 1 {
			t.Errorf("audit seq %d returned %d times", s, seqs[s])
		}
	}
	must(t, stores[1].View(func(tx authority.Tx) error {
		a, err := tx.Audit()
		if err == nil && len(a) != n {
			t.Errorf("audit has %d entries, want %d", len(a), n)
		}
		v, err2 := tx.BlocklistVersion()
		if err2 == nil && v != n/2 {
			t.Errorf("blocklist version %d, want %d", v, n/2)
		}
		return errors.Join(err, err2)
	}))
}

// TestTwoHostsCannotShareAnIP: the UNIQUE column refuses what the allocation rule should
// never produce, from any store.
func TestTwoHostsCannotShareAnIP(t *testing.T) {
	s := open(t, pgtest.NewDB(t))
	defer s.Close()
	ip := netip.MustParsePrefix("10.42.0.5/16")
	must(t, s.Update(func(tx authority.Tx) error { return tx.PutHost(authority.Host{Name: "a", IP: ip}) }))
	err := s.Update(func(tx authority.Tx) error { return tx.PutHost(authority.Host{Name: "b", IP: ip}) })
	if err == nil || !strings.Contains(err.Error(), "hosts_ip_key") {
		t.Fatalf("second host with the same IP: %v", err)
	}
}

// TestTwoHostsCannotShareAnyAddress: the same for every address of a dual-stack host, in
// either position (one host's IPv6 address is another's only one).
func TestTwoHostsCannotShareAnyAddress(t *testing.T) {
	s := open(t, pgtest.NewDB(t))
	defer s.Close()
	a := authority.Host{Name: "a", IP: netip.MustParsePrefix("10.50.0.1/16"), IP6: netip.MustParsePrefix("fd50::1/64")}
	must(t, s.Update(func(tx authority.Tx) error { return tx.PutHost(a) }))
	must(t, s.Update(func(tx authority.Tx) error { return tx.PutHost(a) })) // re-putting is no clash
	for _, b := range []authority.Host{
		{Name: "b", IP: netip.MustParsePrefix("10.50.0.2/16"), IP6: netip.MustParsePrefix("fd50::1/64")},
		{Name: "b", IP: netip.MustParsePrefix("fd50::1/64")},
	} {
		err := s.Update(func(tx authority.Tx) error { return tx.PutHost(b) })
		if err == nil || !strings.Contains(err.Error(), "host_addrs_pkey") {
			t.Errorf("host %v %v sharing a's IPv6 address: %v", b.IP, b.IP6, err)
		}
	}
}

// TestSchema2MigrationIndexesExistingHosts: a database made by the previous release gets its
// hosts' addresses into host_addrs, so they stay taken.
func TestSchema2MigrationIndexesExistingHosts(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	cur := pgstore.SchemaVersion
	pgstore.SchemaVersion = 1
	s, err := pgstore.Open(ctx, dsn, pgstore.Options{Migrate: true})
	pgstore.SchemaVersion = cur
	must(t, err)
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	must(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `INSERT INTO meshnode.hosts (name, ip, doc) VALUES ('old', '10.42.0.5', '{"name":"old","ip":"10.42.0.5/16","cidr":"mesh"}')`)
	must(t, err)
	s = open(t, dsn)
	defer s.Close()
	var v int
	must(t, conn.QueryRow(ctx, "SELECT version FROM meshnode.schema_version").Scan(&v))
	if v != cur || cur < 2 {
		t.Fatalf("schema version %d, want %d (at least 2)", v, cur)
	}
	err = s.Update(func(tx authority.Tx) error {
		return tx.PutHost(authority.Host{Name: "new", IP: netip.MustParsePrefix("10.43.0.1/16"), IP6: netip.MustParsePrefix("fd50::1/64")})
	})
	must(t, err)
	err = s.Update(func(tx authority.Tx) error {
		return tx.PutHost(authority.Host{Name: "new2", IP: netip.MustParsePrefix("fd51::1/64"), IP6: netip.MustParsePrefix("10.42.0.5/16")})
	})
	if err == nil || !strings.Contains(err.Error(), "host_addrs_pkey") {
		t.Errorf("a migrated host's address given again: %v", err)
	}
}

func TestAuditLogRefusesChangesInTheDatabase(t *testing.T) {
	dsn := pgtest.NewDB(t)
	s := open(t, dsn)
	defer s.Close()
	must(t, s.Update(func(tx authority.Tx) error {
		_, err := tx.AppendAudit(authority.AuditEntry{Action: "invite"})
		return err
	}))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	must(t, err)
	defer conn.Close(ctx)
	for _, q := range []string{"UPDATE meshnode.audit SET doc = '{}'", "DELETE FROM meshnode.audit", "TRUNCATE meshnode.audit"} {
		if _, err := conn.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v", q, err)
		}
	}
}

func TestSchemaVersionIsCheckedBothWays(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := pgstore.Open(ctx, dsn, pgstore.Options{}); !errors.Is(err, pgstore.ErrSchemaOlder) || !strings.Contains(err.Error(), "mesh-cert store upgrade") {
		t.Fatalf("empty database without Migrate: %v", err)
	}
	s := open(t, dsn)
	s.Close()
	s, err := pgstore.Open(ctx, dsn, pgstore.Options{}) // current: no migration needed
	must(t, err)
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	must(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "UPDATE meshnode.schema_version SET version = version + 1")
	must(t, err)
	for _, migrate := range []bool{false, true} {
		if _, err := pgstore.Open(ctx, dsn, pgstore.Options{Migrate: migrate}); !errors.Is(err, pgstore.ErrSchemaNewer) {
			t.Errorf("newer database (migrate=%v): %v", migrate, err)
		}
	}
}

func TestBadDSNIsAClearErrorWithoutThePassword(t *testing.T) {
	_, err := pgstore.Open(context.Background(), "postgres://u:s3cret@[bad/db", pgstore.Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("bad DSN: %v", err)
	}
}

// TestUpdatesSurviveAPostgresRestart: a server crash between and during updates; writes
// retried after it come through once the server is back, nothing half-written.
func TestUpdatesSurviveAPostgresRestart(t *testing.T) {
	c := pgtest.Start(t)
	s := open(t, c.CreateDB(t))
	defer s.Close()
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 10 * time.Millisecond)
			errs[i] = s.Update(func(tx authority.Tx) error {
				if err := tx.PutToken(authority.TokenRecord{Hash: fmt.Sprint("h", i), Host: "x"}); err != nil {
					return err
				}
				_, err := tx.AppendAudit(authority.AuditEntry{Action: "t", Detail: fmt.Sprint(i)})
				return err
			})
		})
	}
	time.Sleep(150 * time.Millisecond)
	c.Crash()
	time.Sleep(300 * time.Millisecond)
	must(t, c.Start())
	wg.Wait()
	done := 0
	for _, err := range errs {
		if err == nil {
			done++
		} else if !strings.Contains(err.Error(), "may or may not") {
			t.Errorf("update across the restart: %v", err)
		}
	}
	must(t, s.View(func(tx authority.Tx) error {
		toks, err := tx.Tokens()
		a, err2 := tx.Audit()
		// Each update's token and audit entry are there together or not at all.
		if len(toks) != len(a) || len(toks) < done {
			t.Errorf("%d tokens, %d audit entries, %d updates reported done", len(toks), len(a), done)
		}
		for i, e := range a {
			if e.Seq != uint64(i+1) {
				t.Errorf("audit entry %d has seq %d", i, e.Seq)
			}
		}
		return errors.Join(err, err2)
	}))
	t.Logf("%d of %d updates reported done across the restart", done, n)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestABumpOnOneStoreWakesTheWatchersOfAnother: a revocation committed through one replica
// wakes the blocklist long-polls of another at once; a rolled-back bump wakes nobody.
func TestABumpOnOneStoreWakesTheWatchersOfAnother(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a, b := open(t, dsn), open(t, dsn)
	defer a.Close()
	defer b.Close()
	woke := make(chan struct{}, 10)
	a.WatchBlocklist(func() { woke <- struct{}{} })
	time.Sleep(200 * time.Millisecond) // LISTEN is in place
	_ = b.Update(func(tx authority.Tx) error {
		if _, err := tx.BumpBlocklistVersion(); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	select {
	case <-woke:
		t.Fatal("a rolled-back bump woke a watcher")
	case <-time.After(300 * time.Millisecond):
	}
	must(t, b.Update(func(tx authority.Tx) error { _, err := tx.BumpBlocklistVersion(); return err }))
	select {
	case <-woke:
	case <-time.After(5 * time.Second):
		t.Fatal("a committed bump on another store did not wake the watcher")
	}
}
