package main

// `meshnode enroll`: the flags of enrollment; the work is nodekeys.Enroll.

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/internal/cli"
	"github.com/meshnode/meshnode/nodekeys"
)

// enrollFlags are the flags of `meshnode enroll`.
type enrollFlags struct {
	nodekeys.EnrollOptions
	tokenFile string
}

func newEnrollCmd(stdout, stderr io.Writer) *cobra.Command {
	var o enrollFlags
	c := &cobra.Command{
		Use:   "enroll -token TOKEN -config node.yml",
		Short: "Join the mesh with a token from mesh-cert invite: make the key, fetch the certificate, write the config",
		Long: "Makes this host's key pair, enrolls with the CA service named in the token (only the\n" +
			"public key is sent), writes the key, certificate and CA bundle, and writes the config's\n" +
			"pki, renewal, static_host_map and lighthouse sections. Then start: meshnode -config node.yml",
		Example: "  meshnode enroll -token-file /etc/meshnode/app1.token -config /etc/meshnode/node.yml",
		Args:    cobra.NoArgs,
		RunE:    func(*cobra.Command, []string) error { return cli.Exit(cmdEnroll(o, stdout, stderr)) },
	}
	fs := c.Flags()
	fs.StringVar(&o.Token, "token", "", "the enrollment token printed by `mesh-cert invite`")
	fs.StringVar(&o.tokenFile, "token-file", "", "read the token from this file instead (as written by `mesh-cert invite -out`)")
	fs.StringVar(&o.Config, "config", "", "the node's config to create or update (e.g. /etc/meshnode/node.yml)")
	fs.StringVar(&o.PKIDir, "pki-dir", "", "where to write ca.crt, host.crt and host.key (default: the directory of the config's pki paths, else of the config)")
	fs.BoolVar(&o.Force, "force", false, "overwrite existing key and certificate files")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "give up waiting for the CA service after this long")
	return c
}

func cmdEnroll(o enrollFlags, stdout, stderr io.Writer) int {
	if (o.Token == "") == (o.tokenFile == "") {
		fmt.Fprintln(stderr, "meshnode enroll: give the token with -token TOKEN or -token-file FILE (ask the admin for one: mesh-cert invite)")
		return 2
	}
	if o.Config == "" {
		fmt.Fprintln(stderr, "meshnode enroll: -config is required (e.g. -config /etc/meshnode/node.yml; it is created if missing)")
		return 2
	}
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "meshnode enroll: %v\n", err)
			return 1
		}
		o.Token = strings.TrimSpace(string(b))
	}
	if err := nodekeys.Enroll(context.Background(), o.EnrollOptions, stdout); err != nil {
		fmt.Fprintf(stderr, "meshnode enroll: %v\n", err)
		return 1
	}
	return 0
}
