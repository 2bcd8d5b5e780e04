package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert/authority"
)

type listOptions struct {
	config string
	tree   bool
	audit  bool
}

func newListCmd(e *env) *cobra.Command {
	var o listOptions
	c := &cobra.Command{
		Use:   "list",
		Short: "List the hosts of the CA service's inventory, or with --tree its CIDR tree with the hosts",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runList(e, o) },
	}
	c.Flags().StringVar(&o.config, "config", "", "Required: path to the CA service config (ca.yml)")
	c.Flags().BoolVar(&o.tree, "tree", false, "show the CIDR tree with its hosts")
	c.Flags().BoolVar(&o.audit, "audit", false, "show the audit log (every invite, enrollment, renewal and revocation) instead")
	return c
}

func runList(e *env, o listOptions) error {
	adm, closeAdm, err := openAdmin(e, o.config)
	if err != nil {
		return err
	}
	defer closeAdm()
	if o.audit {
		es, err := adm.Audit()
		if err != nil {
			return err
		}
		for _, a := range es {
			fmt.Fprintf(e.stdout, "%d\t%s\t%s\t%s\t%s\t%s\n", a.Seq, a.Time.UTC().Format(time.RFC3339), a.Action, a.Host, a.Fingerprint, a.Detail)
		}
		return nil
	}
	inv, err := adm.Inventory()
	if err != nil {
		return err
	}
	now := e.now()
	if !o.tree {
		for _, h := range inv.Hosts {
			fmt.Fprintf(e.stdout, "%s\t%s\n", h.Name, hostLine(h, now))
		}
		return nil
	}
	tree, err := authority.NewTree(inv.CIDRs)
	if err != nil {
		return err
	}
	byCIDR := map[string][]authority.Host{}
	for _, h := range inv.Hosts {
		byCIDR[h.CIDR] = append(byCIDR[h.CIDR], h)
	}
	var walk func(name string, depth int)
	walk = func(name string, depth int) {
		c, _ := tree.Get(name)
		ind := strings.Repeat("  ", depth)
		fmt.Fprintf(e.stdout, "%s%s %s\n", ind, c.Name, prefixList(c.Prefixes()))
		for _, h := range byCIDR[name] {
			fmt.Fprintf(e.stdout, "%s  - %s %s\n", ind, h.Name, hostLine(h, now))
		}
		delete(byCIDR, name)
		for _, ch := range tree.Children(name) {
			walk(ch, depth+1)
		}
	}
	for _, r := range tree.Roots() {
		walk(r, 0)
	}
	writeOrphans(e.stdout, byCIDR, now)
	return nil
}

// writeOrphans lists hosts whose CIDR is not in the tree (should not happen; never hide them).
func writeOrphans(w io.Writer, byCIDR map[string][]authority.Host, now time.Time) {
	for c, hs := range byCIDR {
		fmt.Fprintf(w, "(unknown CIDR %s)\n", c)
		for _, h := range hs {
			fmt.Fprintf(w, "  - %s %s\n", h.Name, hostLine(h, now))
		}
	}
}

func hostLine(h authority.Host, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", prefixList(h.Addrs()))
	if len(h.Groups) > 0 {
		fmt.Fprintf(&b, " groups=%s", strings.Join(h.Groups, ","))
	}
	fmt.Fprintf(&b, " %s", h.State)
	switch h.State {
	case authority.HostEnrolled:
		left := h.NotAfter.Sub(now).Truncate(time.Second)
		status := "in " + left.String()
		if left < 0 {
			status = "EXPIRED"
		}
		fmt.Fprintf(&b, " expires=%s (%s)", h.NotAfter.UTC().Format(time.RFC3339), status)
		renewed := "never"
		if !h.LastRenewal.IsZero() {
			renewed = h.LastRenewal.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(&b, " renewed=%s", renewed)
	case authority.HostRevoked:
		fmt.Fprintf(&b, " at=%s", h.Revoked.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// prefixList is ps space separated: a dual-stack network or host shows both addresses.
func prefixList(ps []netip.Prefix) string { return strings.Join(prefixStrings(ps), " ") }
