package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert"
)

type printOptions struct {
	path string
	json bool
}

func newPrintCmd(e *env) *cobra.Command {
	var o printOptions
	c := &cobra.Command{
		Use:   "print [-path] FILE",
		Short: "Print the certificates in a file",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 1 {
				if o.path != "" {
					return usagef("give the file either as -path or as an argument, not both")
				}
				o.path = args[0]
			}
			return runPrint(e, o)
		},
	}
	c.Flags().StringVar(&o.path, "path", "", "Required: path to the certificate")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON, one object per line, like nebula-cert 1.6 print -json (v2 objects have nebula-cert 1.11's fields; 1.11 wraps all objects in one array)")
	return c
}

func runPrint(e *env, o printOptions) error {
	if o.path == "" {
		return usagef("-path is required")
	}
	b, err := readFile(o.path)
	if err != nil {
		return err
	}
	// Collect everything first so a bad second block prints nothing at all.
	var out bytes.Buffer
	for rest := b; len(bytes.TrimSpace(rest)) > 0; {
		c, r, err := cert.UnmarshalPEM(rest)
		if err != nil {
			return fmt.Errorf("%s: %w", o.path, err)
		}
		rest = r
		switch {
		case c.Version() == cert.Version2 && o.json:
			j, err := json.Marshal(toPrintJSONV2(c))
			if err != nil {
				return err
			}
			out.Write(j)
			out.WriteByte('\n')
		case c.Version() == cert.Version2:
			// nebula-cert 1.11 prints a v2 certificate as its JSON indented with tabs.
			j, err := json.MarshalIndent(toPrintJSONV2(c), "", "\t")
			if err != nil {
				return err
			}
			out.Write(j)
			out.WriteByte('\n')
		case o.json:
			j, err := json.Marshal(toPrintJSON(c))
			if err != nil {
				return err
			}
			out.Write(j)
			out.WriteByte('\n')
		default:
			writeHuman(&out, c)
		}
	}
	if out.Len() == 0 {
		return fmt.Errorf("%s: %w: no certificate found", o.path, cert.ErrMalformed)
	}
	_, err = e.stdout.Write(out.Bytes())
	return err
}

// jsonDetails has nebula-cert's keys in its (alphabetical, map-sorted) order, so the output
// is byte-for-byte what nebula-cert print -json gives in a UTC timezone.
type jsonDetails struct {
	Groups    []string  `json:"groups"`
	Ips       []string  `json:"ips"`
	IsCa      bool      `json:"isCa"`
	Issuer    string    `json:"issuer"`
	Name      string    `json:"name"`
	NotAfter  time.Time `json:"notAfter"`
	NotBefore time.Time `json:"notBefore"`
	PublicKey string    `json:"publicKey"`
	Subnets   []string  `json:"subnets"`
}

type jsonCert struct {
	Details     jsonDetails `json:"details"`
	Fingerprint string      `json:"fingerprint"`
	Signature   string      `json:"signature"`
}

func toPrintJSON(c *cert.Certificate) jsonCert {
	d := c.Details
	return jsonCert{
		Details: jsonDetails{
			Groups:    append([]string{}, d.Groups...),
			Ips:       prefixStrings(d.Ips),
			IsCa:      d.IsCA,
			Issuer:    d.Issuer,
			Name:      d.Name,
			NotAfter:  d.NotAfter.UTC(),
			NotBefore: d.NotBefore.UTC(),
			PublicKey: hex.EncodeToString(d.PublicKey),
			Subnets:   prefixStrings(d.Subnets),
		},
		Fingerprint: c.Fingerprint(),
		Signature:   hex.EncodeToString(c.Signature),
	}
}

// jsonDetailsV2 and jsonCertV2 are nebula-cert 1.11's JSON of a v2 certificate, keys in its
// (map-sorted) order; absent lists are null there, so they are nil slices here.
type jsonDetailsV2 struct {
	Groups         []string       `json:"groups"`
	IsCa           bool           `json:"isCa"`
	Issuer         string         `json:"issuer"`
	Name           string         `json:"name"`
	Networks       []netip.Prefix `json:"networks"`
	NotAfter       time.Time      `json:"notAfter"`
	NotBefore      time.Time      `json:"notBefore"`
	UnsafeNetworks []netip.Prefix `json:"unsafeNetworks"`
}

type jsonCertV2 struct {
	Curve       string        `json:"curve"`
	Details     jsonDetailsV2 `json:"details"`
	Fingerprint string        `json:"fingerprint"`
	PublicKey   string        `json:"publicKey"`
	Signature   string        `json:"signature"`
	Version     int           `json:"version"`
}

func toPrintJSONV2(c *cert.Certificate) jsonCertV2 {
	d := c.Details
	return jsonCertV2{
		Curve: "CURVE25519",
		Details: jsonDetailsV2{
			Groups:         d.Groups,
			IsCa:           d.IsCA,
			Issuer:         d.Issuer,
			Name:           d.Name,
			Networks:       d.Ips,
			NotAfter:       d.NotAfter.UTC(),
			NotBefore:      d.NotBefore.UTC(),
			UnsafeNetworks: d.Subnets,
		},
		Fingerprint: c.Fingerprint(),
		PublicKey:   hex.EncodeToString(d.PublicKey),
		Signature:   hex.EncodeToString(c.Signature),
		Version:     int(c.Version()),
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// writeHuman prints the layout of nebula-cert print, so users and scripts see the same.
func writeHuman(w io.Writer, c *cert.Certificate) {
	d := c.Details
	list := func(name string, items []string) string {
		if len(items) == 0 {
			return "\t\t" + name + ": []\n"
		}
		return "\t\t" + name + ": [\n\t\t\t" + strings.Join(items, "\n\t\t\t") + "\n\t\t]\n"
	}
	quoted := make([]string, len(d.Groups))
	for i, g := range d.Groups {
		quoted[i] = `"` + g + `"`
	}
	fmt.Fprintf(w, "NebulaCertificate {\n\tDetails {\n\t\tName: %s\n", d.Name)
	io.WriteString(w, list("Ips", prefixStrings(d.Ips)))
	io.WriteString(w, list("Subnets", prefixStrings(d.Subnets)))
	io.WriteString(w, list("Groups", quoted))
	fmt.Fprintf(w, "\t\tNot before: %v\n\t\tNot After: %v\n\t\tIs CA: %v\n\t\tIssuer: %s\n\t\tPublic key: %x\n\t}\n",
		d.NotBefore.UTC(), d.NotAfter.UTC(), d.IsCA, d.Issuer, d.PublicKey)
	fmt.Fprintf(w, "\tFingerprint: %s\n\tSignature: %x\n}\n", c.Fingerprint(), c.Signature)
}
