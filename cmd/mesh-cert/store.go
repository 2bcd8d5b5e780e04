package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/pgstore"
)

// openPostgres is the opener for ca.yml's `store: {type: postgres}`.
func openPostgres(dsn string, migrate bool) (authority.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return pgstore.Open(ctx, dsn, pgstore.Options{Migrate: migrate})
}

// openService opens the service the config describes; migrate lets a PostgreSQL schema be
// created or upgraded (serve does, admin commands do not).
func openService(e *env, cfg *authority.Config, log *slog.Logger, storeWait time.Duration, migrate bool) (*authority.Service, error) {
	return cfg.OpenWith(authority.OpenOptions{Now: e.now, Logger: log, StoreWait: storeWait, Postgres: openPostgres, Migrate: migrate})
}

func newStoreCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "store",
		Short: "Manage the CA service's store: move a bbolt store into PostgreSQL, upgrade the database schema",
	}
	var config, from string
	mig := &cobra.Command{
		Use:   "migrate",
		Short: "Copy a bbolt store (the service stopped) into the empty PostgreSQL store ca.yml names, then compare both",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runStoreMigrate(e, config, from) },
	}
	mig.Flags().StringVar(&config, "config", "", "Required: ca.yml whose store is type postgres")
	mig.Flags().StringVar(&from, "from", "", "the bbolt file to copy (default <state_dir>/ca.db)")
	var upConfig string
	up := &cobra.Command{
		Use:   "upgrade",
		Short: "Create or upgrade the PostgreSQL schema to this mesh-cert's version",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runStoreUpgrade(e, upConfig) },
	}
	up.Flags().StringVar(&upConfig, "config", "", "Required: ca.yml whose store is type postgres")
	c.AddCommand(mig, up)
	return c
}

func postgresConfig(config string) (*authority.Config, string, error) {
	if config == "" {
		return nil, "", usagef("-config is required")
	}
	cfg, err := authority.LoadConfig(config)
	if err != nil {
		return nil, "", err
	}
	if cfg.Store.Type != authority.StorePostgres {
		return nil, "", fmt.Errorf("%s: store is %s; set store.type: postgres (docs/CONFIG.md)", config, cfg.Store.Type)
	}
	dsn, err := cfg.Store.ConnString()
	return cfg, dsn, err
}

func runStoreUpgrade(e *env, config string) error {
	_, dsn, err := postgresConfig(config)
	if err != nil {
		return err
	}
	s, err := openPostgres(dsn, true)
	if err != nil {
		return err
	}
	s.Close()
	fmt.Fprintf(e.stdout, "database schema at version %d\n", pgstore.SchemaVersion)
	return nil
}

func runStoreMigrate(e *env, config, from string) error {
	cfg, dsn, err := postgresConfig(config)
	if err != nil {
		return err
	}
	if from == "" {
		from = filepath.Join(cfg.StateDir, "ca.db")
	}
	src, err := authority.OpenBolt(from, 500*time.Millisecond)
	if errors.Is(err, authority.ErrStoreLocked) {
		return fmt.Errorf("%w: stop mesh-cert serve first, so nothing changes during the copy", err)
	}
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := openPostgres(dsn, true)
	if err != nil {
		return err
	}
	defer dst.Close()
	d, err := authority.CopyStore(dst, src)
	if err != nil {
		return fmt.Errorf("migrate %s: %w (the database was left as it was)", from, err)
	}
	if err := authority.CompareStores(src, dst); err != nil {
		return fmt.Errorf("migrate %s: copied, but the comparison failed: %w", from, err)
	}
	fmt.Fprintf(e.stdout, "copied %s into PostgreSQL and compared both: %d CIDRs, %d hosts, %d certificates, %d tokens, %d revocations, %d nonces, %d audit entries, blocklist version %d\n",
		from, len(d.CIDRs), len(d.Hosts), len(d.Certs), len(d.Tokens), len(d.Revocations), len(d.Nonces), len(d.Audit), d.BlocklistVersion)
	return nil
}
