package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
)

type inviteOptions struct {
	config  string
	cidr    string
	name    string
	groups  string
	ip      string
	ttl     time.Duration
	out     string
	replace bool
	subnets string
}

func newInviteCmd(e *env) *cobra.Command {
	var o inviteOptions
	c := &cobra.Command{
		Use:   "invite",
		Short: "Invite a host: reserve its name, IP and groups and print a single-use enrollment token (inviting a name that has not enrolled again replaces its invite; -replace brings back an enrolled or revoked host)",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return runInvite(e, o) },
	}
	f := c.Flags()
	f.StringVar(&o.config, "config", "", "Required: path to the CA service config (ca.yml)")
	f.StringVar(&o.cidr, "cidr", "", "Required: name of the CIDR the host joins (see 'mesh-cert list --tree'); NAME=PREFIX (or NAME=IPV4PREFIX,IPV6PREFIX for a dual-stack network) adds that CIDR to the tree first")
	f.StringVar(&o.name, "name", "", "Required: host name, unique in the network")
	f.StringVar(&o.groups, "groups", "", "comma separated groups")
	f.StringVar(&o.subnets, "subnets", "", "comma separated IPv4 networks the host may route for as a gateway (its certificates carry them; tun.unsafe_routes on other hosts point at it)")
	f.StringVar(&o.ip, "ip", "", "address for the host, IPv4 or IPv6, or one of each comma separated (default: the next free one in each of the CIDR's networks)")
	f.DurationVar(&o.ttl, "ttl", 0, "how long the token is valid (default: durations.token of ca.yml)")
	f.StringVar(&o.out, "out", "", "write the token to this file (mode 0600) instead of printing it")
	f.BoolVar(&o.replace, "replace", false, "invite an enrolled or revoked host again for a new key: it keeps its IP, CIDR and groups (unless given) and its audit history, and every certificate it still holds is revoked")
	return c
}

func runInvite(e *env, o inviteOptions) error {
	if o.name == "" {
		return usagef("-name is required")
	}
	if o.cidr == "" && !o.replace {
		return usagef("-cidr is required")
	}
	if o.ttl < 0 {
		return usagef("-ttl must be positive, got %v", o.ttl)
	}
	var newCIDR *authority.CIDR
	if strings.Contains(o.cidr, "=") {
		c, err := authority.ParseCIDRSpec(o.cidr)
		if err != nil {
			return usagef("-cidr: %v", err)
		}
		newCIDR, o.cidr = &c, c.Name
	}
	req := authority.InviteRequest{Name: o.name, CIDR: o.cidr, Groups: parseGroups(o.groups), TTL: o.ttl, Replace: o.replace}
	if o.subnets != "" {
		subnets, err := parseNetworks("subnets", o.subnets, cert.Version1)
		if err != nil {
			return err
		}
		req.Subnets = subnets
	}
	if o.ip != "" {
		parts := strings.Split(o.ip, ",")
		if len(parts) > 2 {
			return usagef("-ip: at most two addresses, one IPv4 and one IPv6")
		}
		for i, s := range parts {
			ip, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return usagef("-ip: %v", err)
			}
			if i == 0 {
				req.IP = ip
			} else {
				req.IP6 = ip
			}
		}
	}
	adm, closeAdm, err := openAdmin(e, o.config)
	if err != nil {
		return err
	}
	defer closeAdm()
	if newCIDR != nil {
		if err := adm.AddCIDR(*newCIDR); err != nil {
			return err
		}
	}
	tok, id, err := adm.Invite(req)
	if errors.Is(err, authority.ErrNameTaken) && !o.replace {
		return fmt.Errorf("%w\nto enroll it again with a new key (same name and IP; what it still holds is revoked): mesh-cert invite -config %s -name %s -replace", err, o.config, o.name)
	}
	if err != nil {
		return err
	}
	how := func(ip netip.Prefix) string {
		switch {
		case ip.Addr() == req.IP || ip.Addr() == req.IP6:
			return "chosen"
		case o.replace && o.ip == "":
			return "kept"
		}
		return "next free in " + id.CIDR
	}
	fmt.Fprintf(e.stdout, "name:   %s\nip:     %s (%s)\n", id.Name, id.IP, how(id.IP))
	if id.IP6.IsValid() {
		fmt.Fprintf(e.stdout, "ip6:    %s (%s)\n", id.IP6, how(id.IP6))
	}
	fmt.Fprintf(e.stdout, "groups: %s\n", strings.Join(id.Groups, ","))
	if len(id.Subnets) > 0 {
		fmt.Fprintf(e.stdout, "subnets: %s\n", strings.Join(prefixStrings(id.Subnets), ","))
	}
	if o.out != "" {
		if err := cert.WriteFileAtomic(o.out, []byte(tok+"\n"), 0o600, false); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "token written to %s\n", o.out)
		return nil
	}
	fmt.Fprintf(e.stdout, "token:  %s\n", tok)
	return nil
}
