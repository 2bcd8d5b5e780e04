package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert"
)

// defaultCAVersion is 1, not nebula-cert 1.11's 2, although the handshake now carries v2:
// hosts signed by a CA default to its version, and Nebula 1.6 reads neither a v2 CA in
// pki.ca nor a v2 host certificate, so a default v2 CA would cut every 1.6 host out of a
// mesh made with the defaults (the e2e suites mix 1.6.1 everywhere). v2 is -version 2.
const defaultCAVersion = 1

type caOptions struct {
	name           string
	duration       time.Duration
	groups         string
	networks       string
	unsafeNetworks string
	ips            string // deprecated spelling of networks
	subnets        string // deprecated spelling of unsafeNetworks
	version        uint
	curve          string
	outCrt         string
	outKey         string
	force          bool
}

func newCACmd(e *env) *cobra.Command {
	var o caOptions
	c := &cobra.Command{
		Use:   "ca",
		Short: "Create a self-signed certificate authority",
		Long: `Create a self-signed certificate authority.

-version 2 makes a Nebula v2 (ASN.1) CA, byte-for-byte as nebula-cert 1.11 does; its
-networks and -unsafe-networks may hold IPv4 and IPv6 networks. The default is -version 1
(nebula-cert 1.11 defaults to 2) because Nebula 1.6 hosts read only v1 CAs and
certificates, and hosts default to their CA's version.
Only Curve25519 is supported, not P-256.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runCA(e, o) },
	}
	f := c.Flags()
	f.StringVar(&o.name, "name", "", "Required: name of the certificate authority")
	f.UintVar(&o.version, "version", defaultCAVersion, "certificate format: 1 or 2")
	f.DurationVar(&o.duration, "duration", 8760*time.Hour, "how long the CA is valid")
	f.StringVar(&o.groups, "groups", "", "comma separated groups; limits the groups of certs it signs")
	f.StringVar(&o.networks, "networks", "", "comma separated networks (CIDR); limits the networks of certs it signs (IPv6 needs -version 2)")
	f.StringVar(&o.unsafeNetworks, "unsafe-networks", "", "comma separated networks (CIDR); limits the unsafe networks of certs it signs")
	f.StringVar(&o.ips, "ips", "", "deprecated spelling of -networks")
	f.StringVar(&o.subnets, "subnets", "", "deprecated spelling of -unsafe-networks")
	f.StringVar(&o.curve, "curve", "25519", "signing curve; only 25519 is supported")
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
	v, err := parseVersion(o.version, false)
	if err != nil {
		return err
	}
	if err := checkCurve(o.curve); err != nil {
		return err
	}
	networks, err := parseNetworks(flagName(o.networks, "networks", "ips"), pickFlag(o.networks, o.ips), v)
	if err != nil {
		return err
	}
	unsafe, err := parseNetworks(flagName(o.unsafeNetworks, "unsafe-networks", "subnets"), pickFlag(o.unsafeNetworks, o.subnets), v)
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
		Ips:       networks,
		Subnets:   unsafe,
		Groups:    parseGroups(o.groups),
		NotBefore: now,
		NotAfter:  now.Add(o.duration).Truncate(time.Second),
		PublicKey: pub,
		IsCA:      true,
	}}
	if err := c.SetVersion(v); err != nil {
		return err
	}
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

// flagName names the flag a value came from in error messages.
func flagName(current, name, deprecated string) string {
	if current == "" {
		return deprecated
	}
	return name
}
