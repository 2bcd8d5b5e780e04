package main

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/console"
)

// `mesh-cert admin`: the web console's accounts (console.admins in ca.yml). They are a
// file beside the store, not in it: signing in never needs the store, and whoever can write
// that file is root on the CA machine anyway.
func newConsoleAdminCmd(e *env) *cobra.Command {
	var config string
	c := &cobra.Command{
		Use:   "admin",
		Short: "Manage the web console's admin accounts (add, remove, list)",
		Example: `  mesh-cert admin add alice -config /etc/mesh-cert/ca.yml
  echo "$PASSWORD" | mesh-cert admin add bob -config ca.yml -password-stdin
  mesh-cert admin list -config ca.yml`,
	}
	c.PersistentFlags().StringVar(&config, "config", "", "Required: path to the CA service config (ca.yml)")
	var stdin, replace bool
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a console admin; prints a new random password unless -password-stdin gives one",
		Example: `  mesh-cert admin add alice -config /etc/mesh-cert/ca.yml
  mesh-cert admin add bob -config ca.yml -password-stdin < bob.password`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := loadConsoleConfig(config)
			if err != nil {
				return err
			}
			pw, made := "", false
			if stdin {
				line, err := bufio.NewReader(os.Stdin).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("reading the password from stdin: %w", err)
				}
				pw = strings.TrimRight(line, "\r\n")
			} else {
				pw, made = rand.Text(), true // 26 base32 characters, 130 bits
			}
			if err := console.AddAccount(cfg.Console.Admins, args[0], pw, replace, console.DefaultArgon2, e.now()); err != nil {
				return fmt.Errorf("%w (accounts file %s)", err, cfg.Console.Admins)
			}
			fmt.Fprintf(e.stdout, "admin %s added to %s\n", args[0], cfg.Console.Admins)
			if made {
				fmt.Fprintf(e.stdout, "password: %s\n(shown once; give it to %s over a private channel)\n", pw, args[0])
			}
			if cfg.Console.Listen == "" {
				fmt.Fprintf(e.stderr, "Note: the console is off: set console.listen in %s and restart mesh-cert serve\n", config)
			}
			return nil
		},
	}
	add.Flags().BoolVar(&stdin, "password-stdin", false, "read the password (at least 12 characters) from the first line of stdin")
	add.Flags().BoolVar(&replace, "replace", false, "set a new password for an existing admin")
	remove := &cobra.Command{
		Use:     "remove NAME",
		Short:   "Remove a console admin; their sessions end at their next request",
		Example: `  mesh-cert admin remove bob -config ca.yml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := loadConsoleConfig(config)
			if err != nil {
				return err
			}
			if err := console.RemoveAccount(cfg.Console.Admins, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "admin %s removed\n", args[0])
			return nil
		},
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the console admins",
		Example: `  mesh-cert admin list -config ca.yml`,
		Args:    cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			cfg, err := loadConsoleConfig(config)
			if err != nil {
				return err
			}
			as, err := console.LoadAccounts(cfg.Console.Admins)
			if err != nil {
				return err
			}
			for _, a := range as {
				fmt.Fprintf(e.stdout, "%s\tadded %s\n", a.Name, a.Created.Format("2006-01-02"))
			}
			return nil
		},
	}
	c.AddCommand(add, remove, list)
	return c
}

func loadConsoleConfig(config string) (*authority.Config, error) {
	if config == "" {
		return nil, usagef("-config is required")
	}
	return authority.LoadConfig(config)
}
