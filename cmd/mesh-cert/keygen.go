package main

import (
	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert"
)

type keygenOptions struct {
	outKey, outPub string
	force          bool
}

func newKeygenCmd(e *env) *cobra.Command {
	var o keygenOptions
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Create a host key pair; give the public key to 'mesh-cert sign -in-pub'",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runKeygen(e, o) },
	}
	f := c.Flags()
	f.StringVar(&o.outKey, "out-key", "", "Required: path to write the private key to")
	f.StringVar(&o.outPub, "out-pub", "", "Required: path to write the public key to")
	f.BoolVar(&o.force, "force", false, "overwrite existing files")
	return c
}

func runKeygen(_ *env, o keygenOptions) error {
	if o.outKey == "" {
		return usagef("-out-key is required")
	}
	if o.outPub == "" {
		return usagef("-out-pub is required")
	}
	pub, priv, err := cert.GenerateX25519()
	if err != nil {
		return err
	}
	return cert.WriteFiles([]cert.File{
		{Path: o.outKey, Data: cert.MarshalX25519PrivateKey(priv), Perm: 0o600},
		{Path: o.outPub, Data: cert.MarshalX25519PublicKey(pub), Perm: 0o644},
	}, o.force)
}
