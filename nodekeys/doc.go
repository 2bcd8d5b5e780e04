// Package nodekeys is the node's side of key handling: enrollment with a token (key made
// here, certificate fetched, config written), the renewal loop with its crash-safe files
// (counter, pending key, journal, and recovery of an interrupted renewal), the signed
// blocklist (interval fetch, long-poll push, persistence across restarts), and the PKI
// manager that serialises every change of the running node's PKI.
//
// It sits beside overlay, not in it, because it talks to the CA service through
// cert/authority/client, which the runtime must not import; it links none of the service
// itself (cert/authority/api carries the wire types). cmd/meshnode wires flags to it.
package nodekeys
