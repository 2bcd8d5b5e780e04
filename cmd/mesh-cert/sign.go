package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert"
)

type signOptions struct {
	name           string
	networks       string
	unsafeNetworks string
	ip             string // deprecated spelling of networks
	subnets        string // deprecated spelling of unsafeNetworks
	version        uint
	groups         string
	duration       time.Duration
	caCrt          string
	caKey          string
	inPub          string
	outCrt         string
	outKey         string
	force          bool
}

func newSignCmd(e *env) *cobra.Command {
	var o signOptions
	c := &cobra.Command{
		Use:   "sign",
		Short: "Create and sign a host certificate",
		Long: `Create and sign a host certificate.

The format follows the signing CA unless -version says otherwise (as nebula-cert 1.11):
a v1 CA may sign v2 hosts and a v2 CA v1 hosts. A v2 certificate is byte-for-byte what
nebula-cert 1.11 makes and may hold IPv4 and IPv6 -networks (at most one of each is usual;
they are stored sorted). A v1 certificate holds IPv4 only; several -networks are kept in
the order given, the first being the VPN identity, as nebula-cert 1.6 allowed.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runSign(e, o) },
	}
	f := c.Flags()
	f.StringVar(&o.name, "name", "", "Required: name of the cert, usually a hostname")
	f.UintVar(&o.version, "version", 0, "certificate format: 1 or 2 (default: the signing CA's)")
	f.StringVar(&o.networks, "networks", "", "Required: comma separated addresses with their network in CIDR notation (10.42.0.5/16, fd42::5/64)")
	f.StringVar(&o.unsafeNetworks, "unsafe-networks", "", "comma separated networks (CIDR) this host may route for")
	f.StringVar(&o.ip, "ip", "", "deprecated spelling of -networks")
	f.StringVar(&o.subnets, "subnets", "", "deprecated spelling of -unsafe-networks")
	f.StringVar(&o.groups, "groups", "", "comma separated groups")
	f.DurationVar(&o.duration, "duration", 0, "how long the cert is valid (default: until 1 second before the CA expires)")
	f.StringVar(&o.caCrt, "ca-crt", "ca.crt", "path to the signing CA cert")
	f.StringVar(&o.caKey, "ca-key", "ca.key", "path to the signing CA key")
	f.StringVar(&o.inPub, "in-pub", "", "path to a public key made by 'mesh-cert keygen' (then no key file is written)")
	f.StringVar(&o.outCrt, "out-crt", "", "path to write the certificate to (default NAME.crt)")
	f.StringVar(&o.outKey, "out-key", "", "path to write the private key to (default NAME.key)")
	f.BoolVar(&o.force, "force", false, "overwrite existing files")
	return c
}

// readFile wraps read errors as "path: reason".
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

func runSign(e *env, o signOptions) error {
	if o.name == "" {
		return usagef("-name is required")
	}
	if pickFlag(o.networks, o.ip) == "" {
		return usagef("-networks is required")
	}
	if o.inPub != "" && o.outKey != "" {
		return usagef("-in-pub and -out-key cannot be used together: with -in-pub the private key stays on the host")
	}
	if o.duration < 0 {
		return usagef("-duration must be positive, got %v", o.duration)
	}
	v, err := parseVersion(o.version, true)
	if err != nil {
		return err
	}

	caKeyPEM, err := readFile(o.caKey)
	if err != nil {
		return err
	}
	caKey, _, err := cert.UnmarshalEd25519PrivateKey(caKeyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", o.caKey, err)
	}
	caPEM, err := readFile(o.caCrt)
	if err != nil {
		return err
	}
	ca, _, err := cert.UnmarshalPEM(caPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", o.caCrt, err)
	}
	if !ca.Details.IsCA {
		return fmt.Errorf("%s: %w", o.caCrt, cert.ErrNotCA)
	}
	if v == 0 {
		v = ca.Version()
	}
	// Parsed only now that the version is known: it decides whether IPv6 is allowed.
	ips, err := parseNetworks(flagName(o.networks, "networks", "ip"), pickFlag(o.networks, o.ip), v)
	if err != nil {
		return err
	}
	if len(ips) == 0 {
		return usagef("-networks is required")
	}
	subnets, err := parseNetworks(flagName(o.unsafeNetworks, "unsafe-networks", "subnets"), pickFlag(o.unsafeNetworks, o.subnets), v)
	if err != nil {
		return err
	}
	// nebula PR #503: signing with a key that is not the CA's makes certs nobody accepts.
	if err := ca.VerifyPrivateKey(caKey); err != nil {
		return fmt.Errorf("refusing to sign: %s does not match %s: %w", o.caKey, o.caCrt, err)
	}
	now := e.now()
	if ca.Expired(now) {
		return fmt.Errorf("%s: ca certificate is expired (valid %s to %s)", o.caCrt,
			ca.Details.NotBefore.UTC().Format(time.RFC3339), ca.Details.NotAfter.UTC().Format(time.RFC3339))
	}

	var pub, priv []byte
	if o.inPub != "" {
		b, err := readFile(o.inPub)
		if err != nil {
			return err
		}
		if pub, _, err = cert.UnmarshalX25519PublicKey(b); err != nil {
			return fmt.Errorf("%s: %w", o.inPub, err)
		}
	} else if pub, priv, err = cert.GenerateX25519(); err != nil {
		return err
	}

	notBefore := now.Truncate(time.Second)
	notAfter := ca.Details.NotAfter.Add(-time.Second)
	if o.duration > 0 {
		notAfter = now.Add(o.duration).Truncate(time.Second)
	}
	c := &cert.Certificate{Details: cert.Details{
		Name:      o.name,
		Ips:       ips,
		Subnets:   subnets,
		Groups:    parseGroups(o.groups),
		NotBefore: notBefore,
		NotAfter:  notAfter,
		PublicKey: pub,
		Issuer:    ca.Fingerprint(),
	}}
	if err := c.SetVersion(v); err != nil {
		return err
	}
	if err := c.CheckConstraints(ca); err != nil {
		return fmt.Errorf("refusing to sign, root certificate constraints violated: %w", err)
	}
	if err := c.Sign(caKey); err != nil {
		return err
	}
	crt, err := c.MarshalPEM()
	if err != nil {
		return err
	}

	if o.outCrt == "" {
		o.outCrt = o.name + ".crt"
	}
	files := []cert.File{{Path: o.outCrt, Data: crt, Perm: 0o644}}
	if priv != nil {
		if o.outKey == "" {
			o.outKey = o.name + ".key"
		}
		files = append([]cert.File{{Path: o.outKey, Data: cert.MarshalX25519PrivateKey(priv), Perm: 0o600}}, files...)
	}
	return cert.WriteFiles(files, o.force)
}
