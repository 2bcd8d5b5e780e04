// Package console is the CA service's web console: an admin signs in from a browser and
// sees the network tree, invites and revokes hosts, adds phones and laptops that run
// Nebula's own apps (a certificate for the key the app made, shown as QR codes and a site
// file), and reads the audit log, the CA status and a list of warnings.
//
// It is server-side HTML (html/template) with every asset embedded, served over HTTPS with
// the service's own TLS identity. Accounts live in a small file of argon2id hashes written
// by `mesh-cert admin add`; sessions live in memory (a restart signs everyone out). Every
// change is a POST carrying the session's CSRF token and lands in the audit log with the
// admin's name. The package holds no CA logic: it calls *authority.Authority.
package console
