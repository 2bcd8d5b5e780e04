package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRevokeCmd(e *env) *cobra.Command {
	var config string
	c := &cobra.Command{
		Use:   "revoke HOST|FINGERPRINT",
		Short: "Revoke a host (all its certificates) or one certificate; it can no longer renew or enroll",
		Args:  cobra.ExactArgs(1),
		RunE:  func(_ *cobra.Command, args []string) error { return runRevoke(e, config, args[0]) },
	}
	c.Flags().StringVar(&config, "config", "", "Required: path to the CA service config (ca.yml)")
	return c
}

func runRevoke(e *env, config, target string) error {
	adm, closeAdm, err := openAdmin(e, config)
	if err != nil {
		return err
	}
	defer closeAdm()
	res, err := adm.Revoke(target)
	if err != nil {
		return err
	}
	who := "certificate " + target
	if res.Host != "" {
		who = "host " + res.Host
	}
	fmt.Fprintf(e.stdout, "revoked %s: %d certificate(s) newly blocked, blocklist version %d\n", who, len(res.Fingerprints), res.Version)
	for _, fp := range res.Fingerprints {
		fmt.Fprintf(e.stdout, "  %s\n", fp)
	}
	if res.Warning != "" {
		fmt.Fprintf(e.stderr, "WARNING: %s\n", res.Warning)
	}
	return nil
}
