package main

// The command line: the daemon is the root command, the operator tools its subcommands.
// Flags are nebula's single-dash long names (-config, -control); --config works too.

import (
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/internal/cli"
	"github.com/meshnode/meshnode/overlay"
)

const rootLong = `meshnode runs one host of the mesh: meshnode -config /etc/meshnode/node.yml
(Nebula's config format; docs/CONFIG.md has every key). SIGHUP re-reads the config,
SIGTERM closes every tunnel and exits. The daemon runs on Linux only; as a service:
systemctl enable --now meshnode@node (the installed unit runs /etc/meshnode/node.yml).

The operator subcommands (status, ping, check, list, reload) talk to the running daemon
through its control socket, by default ` + overlay.DefaultControlPath + `; give -control PATH
when the daemon uses another. Getting started: docs/GETTING-STARTED.md.`

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := cli.NewRoot("meshnode", "Run one host of the meshnode overlay network, or ask the running daemon about it", stdout, stderr)
	root.Long = rootLong
	root.Example = `  meshnode -config /etc/meshnode/node.yml -test
  meshnode -config /etc/meshnode/node.yml
  meshnode -config node.yml -control /run/meshnode/web1.sock`
	var o daemonOptions
	f := root.Flags()
	f.StringVar(&o.config, "config", "", "path to the node's YAML config (Nebula's format)")
	f.BoolVar(&o.test, "test", false, "validate the config and the PKI it names, then exit")
	f.StringVar(&o.control, "control", overlay.DefaultControlPath, "unix socket for meshnode status/ping/check/list/reload (\"\" disables it; overrides control.path)")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the daemon's whole run to this file, on exit (SIGTERM/SIGINT)")
	f.StringVar(&o.memProfile, "memprofile", "", "write a heap profile (pprof) to this file on exit")
	// No Args check: with subcommands, cobra then reports "unknown command" for a stray word.
	root.RunE = func(c *cobra.Command, _ []string) error {
		o.controlSet = c.Flags().Changed("control")
		return cli.Exit(runDaemon(o, stdout, stderr))
	}
	root.AddCommand(newStatusCmd(stdout, stderr), newPingCmd(stdout, stderr), newCheckCmd(stdout, stderr),
		newListCmd(stdout, stderr), newReloadCmd(stdout, stderr), newEnrollCmd(stdout, stderr))
	return root
}

// controlFlag adds the -control flag every client subcommand takes.
func controlFlag(c *cobra.Command) *string {
	return c.Flags().String("control", overlay.DefaultControlPath, "the daemon's control socket")
}

func newStatusCmd(stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "status",
		Short: "Show this host, its tunnels (peer, path, handshake, traffic, cert expiry) and firewall drops",
		Example: `  meshnode status
  meshnode status -rtt
  meshnode status -json -control /run/meshnode/web1.sock`,
		Args: cobra.NoArgs,
	}
	path := controlFlag(c)
	asJSON := c.Flags().Bool("json", false, "print JSON instead of a table")
	rtt := c.Flags().Bool("rtt", false, "measure each tunnel's round trip (sends one probe per peer, waits up to 1s)")
	c.RunE = func(*cobra.Command, []string) error { return cli.Exit(cmdStatus(*path, *asJSON, *rtt, stdout, stderr)) }
	return c
}

func newPingCmd(stdout, stderr io.Writer) *cobra.Command {
	var o pingOptions
	c := &cobra.Command{
		Use:   "ping HOST|VPN-IP",
		Short: "Send probes through the tunnel to a peer (making the tunnel first) and print the round trips",
		Long: "ping proves the tunnel (both daemons answer), not the firewalls: the peer's firewall may\n" +
			"still drop the traffic you mean to send. meshnode check asks both firewalls.\n\n" +
			"HOST is a name from a certificate: a peer's, or else one the lighthouses know.",
		Example: `  meshnode ping 10.42.1.2 -c 3
  meshnode ping db1 -c 1 -W 5s`,
		Args: cobra.ArbitraryArgs, // checked by cmdPing, which says what to give
	}
	c.Flags().StringVar(&o.control, "control", overlay.DefaultControlPath, "the daemon's control socket")
	c.Flags().IntVarP(&o.count, "count", "c", 3, "number of probes")
	c.Flags().DurationVarP(&o.interval, "interval", "i", time.Second, "time between probes")
	c.Flags().DurationVarP(&o.timeout, "timeout", "W", 2*time.Second, "time to wait for each reply (the first also waits for a handshake, at least 5s)")
	c.RunE = func(_ *cobra.Command, pos []string) error { return cli.Exit(cmdPing(o, pos, stdout, stderr)) }
	return c
}

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "check HOST|VPN-IP tcp/PORT|udp/PORT|icmp",
		Short: "Say whether traffic reaches a peer: the tunnel, this host's outbound and the peer's inbound firewall",
		Long: "check names the rule that decided and, when something drops the traffic, which rule to add\n" +
			"where. Exit status: 0 both firewalls let it through, 1 one drops it (or no tunnel),\n" +
			"2 a usage mistake, 3 the peer runs Nebula, whose firewall cannot be asked.",
		Example: `  meshnode check db1 tcp/5432
  meshnode check 10.42.1.2 icmp -json`,
		Args: cobra.ArbitraryArgs, // checked by cmdCheck, which says what to give
	}
	path := controlFlag(c)
	asJSON := c.Flags().Bool("json", false, "print JSON")
	c.RunE = func(_ *cobra.Command, pos []string) error {
		return cli.Exit(cmdCheck(*path, *asJSON, pos, stdout, stderr))
	}
	return c
}

func newListCmd(stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "list",
		Short: "List the hosts this one knows (tunnels, lighthouse answers, static_host_map), by network",
		Example: `  meshnode list
  meshnode list -tree`,
		Args: cobra.NoArgs,
	}
	path := controlFlag(c)
	tree := c.Flags().Bool("tree", false, "draw hosts as a tree under their networks")
	asJSON := c.Flags().Bool("json", false, "print JSON")
	c.RunE = func(*cobra.Command, []string) error { return cli.Exit(cmdList(*path, *tree, *asJSON, stdout, stderr)) }
	return c
}

func newReloadCmd(stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:     "reload",
		Short:   "Re-read the daemon's config, as SIGHUP does, and print what changed",
		Example: "  meshnode reload\n  meshnode reload -control /run/meshnode/web1.sock",
		Args:    cobra.NoArgs,
	}
	path := controlFlag(c)
	c.RunE = func(*cobra.Command, []string) error { return cli.Exit(cmdReload(*path, stdout, stderr)) }
	return c
}
