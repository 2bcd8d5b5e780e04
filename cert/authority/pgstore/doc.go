// Package pgstore is the CA service's store on PostgreSQL, for running several
// `mesh-cert serve` replicas on one database (the embedded bbolt store stays the default).
//
// Every Update is one SERIALIZABLE transaction, retried from the start when PostgreSQL
// reports a serialization failure or deadlock: concurrent Updates, from any number of
// processes, then behave as if run one after another, which is the authority.Store
// contract the token, renewal-counter and IP-allocation rules rest on. No process-local
// lock is involved. Views are REPEATABLE READ READ ONLY snapshots.
//
// The schema lives in the PostgreSQL schema "meshnode" and carries its version; Open
// creates or upgrades it only when asked (Options.Migrate) and refuses a database newer
// than this binary. Records are the authority types as JSON (jsonb), keyed as in the
// bbolt store; the audit table refuses UPDATE, DELETE and TRUNCATE, and host addresses are
// UNIQUE as a second line behind the allocation rule.
package pgstore
