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
	name     string
	ip       string
	subnets  string
	groups   string
	duration time.Duration
	caCrt    string
	caKey    string
	inPub    string
	outCrt   string
	outKey   string
	force    bool
}

func newSignCmd(e *env) *cobra.Command {
	var o signOptions
	c := &cobra.Command{
		Use:   "sign",
		Short: "Create and sign a host certificate",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runSign(e, o) },
	}
	f := c.Flags()
	f.StringVar(&o.name, "name", "", "Required: name of the cert, usually a hostname")
	f.StringVar(&o.ip, "ip", "", "Required: IPv4 address and network in CIDR notation (10.42.0.5/16); comma separated for more than one, the first is the VPN identity")
	f.StringVar(&o.subnets, "subnets", "", "comma separated IPv4 networks (CIDR) this host may route for")
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
	if o.ip == "" {
		return usagef("-ip is required")
	}
	if o.inPub != "" && o.outKey != "" {
		return usagef("-in-pub and -out-key cannot be used together: with -in-pub the private key stays on the host")
	}
	if o.duration < 0 {
		return usagef("-duration must be positive, got %v", o.duration)
	}
	ips, err := parseCIDRs("ip", o.ip)
	if err != nil {
		return err
	}
	if len(ips) == 0 {
		return usagef("-ip is required")
	}
	subnets, err := parseCIDRs("subnets", o.subnets)
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
