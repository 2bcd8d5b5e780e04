package main

import (
	"bytes"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert"
)

type verifyOptions struct {
	ca, crt string
}

func newVerifyCmd(e *env) *cobra.Command {
	var o verifyOptions
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check that a certificate is valid now and signed by a trusted CA",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runVerify(e, o) },
	}
	c.Flags().StringVar(&o.ca, "ca", "", "Required: path to a file containing one or more CA certificates")
	c.Flags().StringVar(&o.crt, "crt", "", "Required: path to a file containing a single certificate")
	return c
}

// runVerify prints nothing on success and the reason on failure, like nebula-cert verify,
// so scripts written for one work with the other.
func runVerify(e *env, o verifyOptions) error {
	if o.ca == "" {
		return usagef("-ca is required")
	}
	if o.crt == "" {
		return usagef("-crt is required")
	}
	caPEM, err := readFile(o.ca)
	if err != nil {
		return err
	}
	pool, err := cert.NewPoolFromPEMWithClock(caPEM, e.now)
	if err != nil {
		return fmt.Errorf("%s: %w", o.ca, err)
	}
	for _, w := range pool.Warnings() {
		fmt.Fprintf(e.stderr, "Warning: %s: %s\n", o.ca, w)
	}
	b, err := readFile(o.crt)
	if err != nil {
		return err
	}
	// Every certificate in the file is checked, as nebula-cert 1.11 does (a host may hold a
	// v1 and a v2 certificate in one file); the first failure is reported.
	for rest := b; ; {
		c, r, err := cert.UnmarshalPEM(rest)
		if err != nil {
			return fmt.Errorf("%s: %w", o.crt, err)
		}
		if _, err := pool.Verify(c, e.now()); err != nil {
			return err
		}
		if rest = r; len(bytes.TrimSpace(rest)) == 0 {
			return nil
		}
	}
}
