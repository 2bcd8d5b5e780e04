// Package cert implements Nebula v1 and v2 certificates: the wire codecs, PEM files and
// keys, signing and verification, and a pool of trusted CAs with a blocklist and CA
// constraints. v2 (ASN.1 DER, codec_v2.go) is read and written with the same strictness as
// v1 below, on x/crypto/cryptobyte; only Curve25519 is supported.
//
// The codec is written by hand on google.golang.org/protobuf/encoding/protowire rather than
// generated from a .proto file. The schema is two small messages, and what matters for
// security is exact control over the canonical encoding: Nebula signs and fingerprints the
// re-marshaled certificate, so two encodings of one certificate must never yield two
// fingerprints (a blocklist bypass). Decoding is therefore strict and accepts only the
// canonical encoding (ascending fields, defaults omitted, packed minimal varints, no unknown
// or duplicate fields, no trailing bytes), and signatures and fingerprints are still computed
// over our own re-marshal, so the two defences back each other up.
//
// The package does no I/O beyond reading and writing the files it is asked to. It knows
// nothing about handshakes or the CA service; those build on it.
package cert
