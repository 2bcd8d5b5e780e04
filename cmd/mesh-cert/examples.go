package main

import "github.com/spf13/cobra"

// examples are shown by `mesh-cert CMD --help`; the help test checks that every flag they
// use exists. Kept in one table so the command files stay about what the commands do.
var examples = map[string]string{
	"ca": `  mesh-cert ca -name "Acme mesh" -duration 8760h
  mesh-cert ca -name "Acme mesh 2027" -out-crt ca-2027.crt -out-key ca-2027.key`,
	"sign": `  mesh-cert sign -name web1 -ip 10.42.1.5/16 -groups web,ssh
  mesh-cert sign -name db1 -ip 10.42.1.6/16 -in-pub db1.pub -ca-crt ca.crt -ca-key ca.key`,
	"keygen": `  mesh-cert keygen -out-key db1.key -out-pub db1.pub`,
	"print": `  mesh-cert print -path web1.crt
  mesh-cert print -json ca.crt`,
	"verify": `  mesh-cert verify -ca ca.crt -crt web1.crt`,
	"serve":  `  mesh-cert serve -config /etc/mesh-cert/ca.yml`,
	"invite": `  mesh-cert invite -config ca.yml -cidr apps -name app1 -groups web -out app1.token
  mesh-cert invite -config ca.yml -cidr apps -name app2 -ip 10.42.2.20 -ttl 2h`,
	"list": `  mesh-cert list -config ca.yml
  mesh-cert list -config ca.yml -tree`,
	"revoke": `  mesh-cert revoke -config ca.yml web1`,
	"store": `  mesh-cert store upgrade -config ca.yml
  mesh-cert store migrate -config ca.yml -from state/ca.db`,
	"store migrate": `  mesh-cert store migrate -config ca.yml -from state/ca.db`,
	"store upgrade": `  mesh-cert store upgrade -config ca.yml`,
}

func addExamples(root *cobra.Command) {
	for _, c := range root.Commands() {
		if ex, ok := examples[c.Name()]; ok && c.Example == "" {
			c.Example = ex
		}
		for _, sub := range c.Commands() {
			if ex, ok := examples[c.Name()+" "+sub.Name()]; ok && sub.Example == "" {
				sub.Example = ex
			}
		}
	}
}
