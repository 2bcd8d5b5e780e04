package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert"
)

type caOptions struct {
	name     string
	duration time.Duration
	groups   string
	ips      string
	subnets  string
	outCrt   string
	outKey   string
	force    bool
}

func newCACmd(e *env) *cobra.Command {
	var o caOptions
	c := &cobra.Command{
		Use:   "ca",
		Short: "Create a self-signed certificate authority",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runCA(e, o) },
	}
	f := c.Flags()
	f.StringVar(&o.name, "name", "", "Required: name of the certificate authority")
	f.DurationVar(&o.duration, "duration", 8760*time.Hour, "how long the CA is valid")
	f.StringVar(&o.groups, "groups", "", "comma separated groups; limits the groups of certs it signs")
	f.StringVar(&o.ips, "ips", "", "comma separated IPv4 networks (CIDR); limits the IPs of certs it signs")
	f.StringVar(&o.subnets, "subnets", "", "comma separated IPv4 networks (CIDR); limits the subnets of certs it signs")
	f.StringVar(&o.outCrt, "out-crt", "ca.crt", "path to write the certificate to")
	f.StringVar(&o.outKey, "out-key", "ca.key", "path to write the private key to")
	f.BoolVar(&o.force, "force", false, "overwrite existing files")
	return c
}

func runCA(e *env, o caOptions) error {
	if o.name == "" {
		return usagef("-name is required")
	}
	if o.duration <= 0 {
		return usagef("-duration must be positive, got %v", o.duration)
	}
	ips, err := parseCIDRs("ips", o.ips)
	if err != nil {
		return err
	}
	subnets, err := parseCIDRs("subnets", o.subnets)
	if err != nil {
		return err
	}
	pub, priv, err := cert.GenerateEd25519()
	if err != nil {
		return err
	}
	now := e.now().Truncate(time.Second)
	c := &cert.Certificate{Details: cert.Details{
		Name:      o.name,
		Ips:       ips,
		Subnets:   subnets,
		Groups:    parseGroups(o.groups),
		NotBefore: now,
		NotAfter:  now.Add(o.duration).Truncate(time.Second),
		PublicKey: pub,
		IsCA:      true,
	}}
	if err := c.Sign(priv); err != nil {
		return fmt.Errorf("signing the CA: %w", err)
	}
	crt, err := c.MarshalPEM()
	if err != nil {
		return err
	}
	return cert.WriteFiles([]cert.File{
		{Path: o.outKey, Data: cert.MarshalEd25519PrivateKey(priv), Perm: 0o600},
		{Path: o.outCrt, Data: crt, Perm: 0o644},
	}, o.force)
}
