package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshnode/meshnode/cert/authority"
)

// Errors of Open about the schema's version.
var (
	// ErrSchemaOlder: the database was made by an older mesh-cert (or is empty) and
	// Options.Migrate was not set.
	ErrSchemaOlder = errors.New("database schema is older than this mesh-cert")
	// ErrSchemaNewer: a newer mesh-cert has upgraded the database; this one must not write it.
	ErrSchemaNewer = errors.New("database schema is newer than this mesh-cert")
	// ErrIdentityMismatch: the replica's TLS identity or renewal key is not the one the
	// other replicas serve with.
	ErrIdentityMismatch = errors.New("service identity differs from the one recorded in the database")
)

// Options adjust Open; the zero value opens an existing, current database.
type Options struct {
	// Migrate creates the schema in an empty database and upgrades an older one.
	Migrate bool
	// RetryFor bounds how long an Update is retried after serialization failures and lost
	// connections (a restarting PostgreSQL); default 20 s.
	RetryFor time.Duration
}

// Store is an authority.Store on PostgreSQL. It is safe for concurrent use, and any number
// of Stores (in any number of processes) may share one database.
type Store struct {
	pool     *pgxpool.Pool
	retryFor time.Duration

	mu     sync.RWMutex
	closed bool

	wmu       sync.Mutex
	watchers  []func()
	stopWatch func() // ends the LISTEN goroutine (see watch.go)
}

var _ authority.Store = (*Store)(nil)

// lockKey is the advisory lock that makes replicas starting together migrate one at a time.
const lockKey = 0x6d6573686e6f6465 // "meshnode"

// Open connects to the database dsn names (a libpq connection string or URL; pgxpool's
// pool_max_conns and friends apply) and checks, creates or upgrades its schema.
func Open(ctx context.Context, dsn string, o Options) (*Store, error) {
	if o.RetryFor <= 0 {
		o.RetryFor = 20 * time.Second
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included: say only what is wrong.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		} else {
			err = errors.New("cannot be parsed")
		}
		return nil, fmt.Errorf("store: PostgreSQL DSN is not valid: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: PostgreSQL: %w", err)
	}
	s := &Store{pool: pool, retryFor: o.RetryFor}
	if err := s.schema(ctx, o.Migrate); err != nil {
		pool.Close()
		var pe *pgconn.PgError
		if errors.Is(err, ErrSchemaOlder) || errors.Is(err, ErrSchemaNewer) || strings.HasPrefix(err.Error(), "store:") {
			return nil, err
		} else if errors.As(err, &pe) {
			return nil, fmt.Errorf("store: PostgreSQL: %w", err)
		}
		return nil, fmt.Errorf("store: cannot reach PostgreSQL: %w", err)
	}
	return s, nil
}

// schema checks the database's version, migrating under an advisory lock if asked.
func (s *Store) schema(ctx context.Context, migrate bool) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(lockKey)); err != nil {
			return fmt.Errorf("store: PostgreSQL: %w", err)
		}
		v := 0
		var reg *string
		if err := tx.QueryRow(ctx, "SELECT to_regclass('meshnode.schema_version')::text").Scan(&reg); err != nil {
			return fmt.Errorf("store: PostgreSQL: %w", err)
		}
		if reg != nil {
			if err := tx.QueryRow(ctx, "SELECT version FROM meshnode.schema_version").Scan(&v); err != nil {
				return fmt.Errorf("store: reading the schema version: %w", err)
			}
		}
		switch {
		case v > SchemaVersion:
			return fmt.Errorf("%w: the database is at version %d, this mesh-cert knows versions up to %d; run the newer mesh-cert on every replica",
				ErrSchemaNewer, v, SchemaVersion)
		case v == SchemaVersion:
			return nil
		case !migrate:
			return fmt.Errorf("%w: the database is at version %d, this mesh-cert needs %d; run `mesh-cert store upgrade -config ca.yml` (or start mesh-cert serve, which upgrades it)",
				ErrSchemaOlder, v, SchemaVersion)
		}
		if v == 0 {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS meshnode; CREATE TABLE meshnode.schema_version (version integer NOT NULL); INSERT INTO meshnode.schema_version VALUES (0)"); err != nil {
				return fmt.Errorf("store: creating the schema: %w", err)
			}
		}
		for ; v < SchemaVersion; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("store: schema version %d to %d: %w", v, v+1, err)
			}
		}
		_, err := tx.Exec(ctx, "UPDATE meshnode.schema_version SET version = $1", v)
		return err
	})
}

// Close implements authority.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		if s.stopWatch != nil {
			s.stopWatch()
		}
		s.pool.Close()
	}
	return nil
}

// View implements authority.Store: a consistent snapshot, never a serialization failure.
func (s *Store) View(fn func(authority.Tx) error) error {
	return s.run(pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

// Update implements authority.Store.
func (s *Store) Update(fn func(authority.Tx) error) error {
	return s.run(pgx.TxOptions{IsoLevel: pgx.Serializable}, fn)
}

// run runs fn in a transaction, from the start again while the failure is one a retry
// cures: a serialization failure or deadlock (another transaction won), a unique-key
// violation (two transactions inserted the same key; the retry sees the other's row), or
// a database that went away before the commit was sent (PostgreSQL restarting: the
// transaction died with the connection). A connection lost after the commit was sent is
// not retried: whether it committed is unknown, and the caller's own retry, which sees the
// outcome, decides (a token then reads as used, a renewal's nonce as seen).
func (s *Store) run(opts pgx.TxOptions, fn func(authority.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return authority.ErrStoreClosed
	}
	deadline := time.Now().Add(s.retryFor)
	wait := time.Millisecond
	uniques := 0
	for {
		err, dbErr := s.once(opts, fn)
		if err == nil {
			return nil
		}
		var pe *pgconn.PgError
		switch {
		case !dbErr:
			return err // fn's own answer
		case errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01"):
		case errors.As(err, &pe) && pe.Code == "23505" && uniques < 10:
			uniques++ // a bug putting a duplicate would fail the same way every time
		case errors.As(err, &pe) && !strings.HasPrefix(pe.Code, "57P") && !strings.HasPrefix(pe.Code, "08"):
			return err // the statement itself was refused
		case errors.Is(err, errCommitLost):
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("store: gave up after %v: %w", s.retryFor, err)
		}
		time.Sleep(wait/2 + rand.N(wait)) // jittered, so the losers do not collide again
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// errCommitLost marks a commit whose outcome is unknown.
var errCommitLost = errors.New("store: connection lost during commit; it may or may not have happened")

// once runs fn in one transaction. dbErr says the error came from the database (or the
// way to it), not from fn.
func (s *Store) once(opts pgx.TxOptions, fn func(authority.Tx) error) (err error, dbErr bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("store: PostgreSQL: %w", err), true
	}
	defer tx.Rollback(ctx) // a no-op once committed
	t := &pgTx{ctx: ctx, tx: tx}
	err = fn(t)
	// The first database error decides, whatever fn made of it: after it the transaction
	// is aborted, and a serialization failure must be retried even if fn swallowed it.
	if t.err != nil {
		return t.err, true
	}
	if err != nil {
		return err, false
	}
	if err := tx.Commit(ctx); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return fmt.Errorf("store: commit: %w", err), true // refused: nothing happened
		}
		return fmt.Errorf("%w: %w", errCommitLost, err), true
	}
	return nil, false
}
