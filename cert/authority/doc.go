// Package authority is meshnode's CA service: the network inventory (named CIDRs in a tree,
// hosts with their identity), single-use enrollment tokens, issuance, renewal with proof of
// possession, revocation with a signed blocklist, CA rotation and an append-only audit log,
// all kept in a Store.
//
// The domain logic (Authority) knows nothing of HTTP; Server puts it behind HTTPS and
// package client is the node's side. Who may ask (a token, a renewal proof) is checked and
// consumed in the same store transaction that records what gets signed and its audit entry,
// so a token or a renewal request is never used twice, even by racing requests or across a
// crash, and nothing is issued unaudited.
//
// # Protocol
//
// Trust in the service: it makes a self-signed TLS certificate on first start
// (state_dir/tls.pem). Clients skip chain and name checks and compare the SHA-256 of its
// DER with a pin instead, before sending anything.
//
// Token: "mesh1.<url>.<pin>.<secret>", each part base64url without padding; the secret is
// 32 random bytes. The store keeps only SHA-256(secret), which names the identity (name, IP,
// groups) the admin chose. POST /v1/enroll carries the secret and the host's new X25519
// public key; the private key never leaves the host.
//
// Renewal (POST /v1/renew, see RenewRequest): the current cert, a new public key, a nonce, a
// counter greater than any the host used before and the time, with
// MAC = HMAC-SHA256(HMAC-SHA256(X25519(cert key, service key), "meshnode-renew-v1"), fields).
// The service's X25519 public key comes with the enrollment. Only the identity on record is
// re-issued. Every cert's NotAfter − NotBefore is the configured lifetime, of which a bounded
// part (a minute, at most a tenth) lies before issuance for lagging clocks; it never outlives
// the signing CA.
//
// Blocklist (GET /v1/blocklist, see SignedBlocklist): a version, the fingerprints of
// revoked certs and an Ed25519 signature of the active CA over a canonical text encoding, so
// lighthouses can relay it and every node can check it with VerifyBlocklist.
//
// # Store
//
// BoltStore keeps everything in one bbolt file, fsynced on every commit; MemStore is the same
// contract in memory. storetest holds the contract suite every Store must pass. While
// `mesh-cert serve` holds the file, admin commands reach it through a 0600 unix socket
// (AdminHandler, AdminClient).
package authority
