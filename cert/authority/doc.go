// Package authority is meshnode's CA service: the network inventory (named CIDRs in a tree,
// hosts with their identity), single-use enrollment tokens, issuance, renewal with proof of
// possession, revocation with a signed blocklist, CA rotation and an append-only audit log,
// all kept in a Store.
//
// The domain logic (Authority) knows nothing of HTTP; Server puts it behind HTTPS with a
// self-signed TLS identity that clients pin by fingerprint, and package client is the node's
// side. Who may ask (tokens, renewal proofs) is checked and consumed in the same store
// transaction that records what gets signed, so a token or a renewal request can never be
// used twice, even by racing requests.
package authority
