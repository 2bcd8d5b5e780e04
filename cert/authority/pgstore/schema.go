package pgstore

// migrations[i] takes the schema from version i to i+1. Append only: a released step never
// changes, since databases out there are at its version.
var migrations = []string{
	// 1: the records of the authority.Store interface.
	`CREATE SCHEMA IF NOT EXISTS meshnode;
CREATE TABLE meshnode.meta (k text PRIMARY KEY, v bigint NOT NULL);
INSERT INTO meshnode.meta VALUES ('blocklist_version', 0), ('audit_seq', 0);
CREATE TABLE meshnode.identity (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE meshnode.cidrs (name text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE meshnode.hosts (name text PRIMARY KEY, ip inet UNIQUE, doc jsonb NOT NULL);
CREATE TABLE meshnode.certs (fingerprint text PRIMARY KEY, host text NOT NULL, doc jsonb NOT NULL);
CREATE INDEX certs_host ON meshnode.certs (host);
CREATE TABLE meshnode.tokens (hash text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE meshnode.revocations (fingerprint text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE meshnode.nonces (host text NOT NULL, nonce bytea NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (host, nonce));
CREATE INDEX nonces_at ON meshnode.nonces (at);
CREATE TABLE meshnode.audit (seq bigint PRIMARY KEY, doc jsonb NOT NULL);
CREATE FUNCTION meshnode.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'the meshnode audit log is append-only'; END $$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON meshnode.audit
  FOR EACH ROW EXECUTE FUNCTION meshnode.audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON meshnode.audit
  FOR EACH STATEMENT EXECUTE FUNCTION meshnode.audit_append_only();`,
	// 2: every address of a host (dual-stack hosts have an IPv4 and an IPv6 one) in a
	// UNIQUE column, so no two hosts can be committed with one address in either family.
	`CREATE TABLE meshnode.host_addrs (addr inet PRIMARY KEY, host text NOT NULL REFERENCES meshnode.hosts (name));
CREATE INDEX host_addrs_host ON meshnode.host_addrs (host);
INSERT INTO meshnode.host_addrs SELECT ip, name FROM meshnode.hosts WHERE ip IS NOT NULL;`,
}

// SchemaVersion is the schema version this binary reads and writes.
var SchemaVersion = len(migrations)
