package fleet

import (
	"bufio"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// Addresses of the fleet. The VPN is 10.0.0.0/8: the target lighthouse is 10.0.0.1, a
// target plain host 10.0.0.2, and simulated host i is HostVPN(i), from 10.0.1.0 on, which
// leaves room for 16 million hosts.
var (
	VPNNet        = netip.MustParsePrefix("10.0.0.0/8")
	LighthouseVPN = netip.MustParseAddr("10.0.0.1")
	PlainHostVPN  = netip.MustParseAddr("10.0.0.2")
)

const firstHost = 256 // offset of host 0 in VPNNet and in 127.1.0.0/16 onwards

// HostVPN is the VPN address of simulated host i.
func HostVPN(i int) netip.Addr { return addFour(VPNNet.Addr(), firstHost+i) }

// HostUnderlay is the loopback address simulated host i sends from: 127.1.1.0 + i, within
// 127.0.0.0/8, all of which is local on Linux, so no address has to be configured.
func HostUnderlay(i int) netip.Addr {
	return addFour(netip.AddrFrom4([4]byte{127, 1, 0, 0}), firstHost+i)
}

func addFour(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := binary.BigEndian.Uint32(b[:]) + uint32(n)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Host is one simulated host's identity.
type Host struct {
	Cert *cert.Certificate
	Key  []byte // X25519 private key
}

// PKI is the fleet's CA, the target daemons' identities and the simulated hosts.
type PKI struct {
	CA    *cert.Certificate
	CAKey ed25519.PrivateKey
	Pool  *cert.Pool
	Hosts []Host
}

// Files written by Load into its directory: the CA and the targets' certificates and keys
// as PEM (what the daemons' pki section names), and hosts.bin with the simulated hosts.
const (
	CACertFile = "ca.crt"
	caKeyFile  = "ca.key"
	hostsFile  = "hosts.bin"
)

// Validity of every certificate: long enough for any run, starting in the past so a clock
// a little behind does not refuse them.
const validity = 365 * 24 * time.Hour

// Load returns a PKI with at least n hosts from dir, creating the CA and the targets'
// certificates (lighthouse.crt/.key for 10.0.0.1, host.crt/.key for 10.0.0.2) on first
// use and appending hosts to hosts.bin when it holds fewer than n. Making a host costs an
// X25519 key and an Ed25519 signature, about 0.1 ms, spread over every CPU.
func Load(dir string, n int) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p, err := loadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		p, err = newCA(dir)
	}
	if err != nil {
		return nil, err
	}
	if err := p.loadHosts(filepath.Join(dir, hostsFile), n); err != nil {
		return nil, err
	}
	if len(p.Hosts) < n {
		more, err := p.makeHosts(len(p.Hosts), n)
		if err != nil {
			return nil, err
		}
		if err := appendHosts(filepath.Join(dir, hostsFile), more); err != nil {
			return nil, err
		}
		p.Hosts = append(p.Hosts, more...)
	}
	p.Hosts = p.Hosts[:n]
	return p, nil
}

func loadCA(dir string) (*PKI, error) {
	crt, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, err
	}
	ca, _, err := cert.UnmarshalPEM(crt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertFile, err)
	}
	key, _, err := cert.UnmarshalEd25519PrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caKeyFile, err)
	}
	pool := cert.NewPool()
	if err := pool.AddCA(ca); err != nil {
		return nil, err
	}
	return &PKI{CA: ca, CAKey: key, Pool: pool}, nil
}

func newCA(dir string) (*PKI, error) {
	pub, key, err := cert.GenerateEd25519()
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	ca := &cert.Certificate{Details: cert.Details{
		Name: "fleet-ca", NotBefore: now, NotAfter: now.Add(validity + time.Hour),
		PublicKey: pub, IsCA: true,
	}}
	if err := ca.Sign(key); err != nil {
		return nil, err
	}
	pool := cert.NewPool()
	if err := pool.AddCA(ca); err != nil {
		return nil, err
	}
	p := &PKI{CA: ca, CAKey: key, Pool: pool}
	caPEM, err := ca.MarshalPEM()
	if err != nil {
		return nil, err
	}
	files := []cert.File{
		{Path: filepath.Join(dir, CACertFile), Data: caPEM, Perm: 0o644},
		{Path: filepath.Join(dir, caKeyFile), Data: cert.MarshalEd25519PrivateKey(key), Perm: 0o600},
	}
	for _, t := range []struct {
		name string
		ip   netip.Addr
	}{{"lighthouse", LighthouseVPN}, {"host", PlainHostVPN}} {
		h, err := p.sign(t.name, t.ip)
		if err != nil {
			return nil, err
		}
		crt, err := h.Cert.MarshalPEM()
		if err != nil {
			return nil, err
		}
		files = append(files,
			cert.File{Path: filepath.Join(dir, t.name+".crt"), Data: crt, Perm: 0o644},
			cert.File{Path: filepath.Join(dir, t.name+".key"), Data: cert.MarshalX25519PrivateKey(h.Key), Perm: 0o600})
	}
	// The hosts of an older CA would not verify under this one.
	if err := os.Remove(filepath.Join(dir, hostsFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return p, cert.WriteFiles(files, true)
}

func (p *PKI) sign(name string, ip netip.Addr) (Host, error) {
	pub, key, err := cert.GenerateX25519()
	if err != nil {
		return Host{}, err
	}
	nb := p.CA.Details.NotBefore
	c := &cert.Certificate{Details: cert.Details{
		Name: name, Ips: []netip.Prefix{netip.PrefixFrom(ip, VPNNet.Bits())},
		NotBefore: nb, NotAfter: nb.Add(validity), PublicKey: pub,
		Issuer: p.CA.Fingerprint(),
	}}
	if err := c.Sign(p.CAKey); err != nil {
		return Host{}, err
	}
	return Host{Cert: c, Key: key}, nil
}

// makeHosts signs hosts [from, to) on every CPU.
func (p *PKI) makeHosts(from, to int) ([]Host, error) {
	out := make([]Host, to-from)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(out); i += workers {
				h, err := p.sign(fmt.Sprintf("sim%d", from+i), HostVPN(from+i))
				if err != nil {
					errs[w] = err
					return
				}
				out[i] = h
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// hosts.bin is a sequence of records: uint16 length of the certificate (v1 encoding),
// the certificate, the 32-byte X25519 private key.

func appendHosts(path string, hosts []Host) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, h := range hosts {
		b, err := h.Cert.Marshal()
		if err != nil {
			f.Close()
			return err
		}
		w.Write(binary.BigEndian.AppendUint16(nil, uint16(len(b))))
		w.Write(b)
		w.Write(h.Key)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadHosts reads up to n hosts; a truncated last record (an interrupted run) is dropped
// and the file cut back to the last whole one, so the next append continues cleanly.
func (p *PKI) loadHosts(path string, n int) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	var good int64
	var lenb [2]byte
	for len(p.Hosts) < n {
		if _, err := io.ReadFull(r, lenb[:]); err != nil {
			break
		}
		rec := make([]byte, int(binary.BigEndian.Uint16(lenb[:]))+32)
		if _, err := io.ReadFull(r, rec); err != nil {
			break
		}
		c, err := cert.UnmarshalV1(rec[:len(rec)-32])
		if err != nil {
			return fmt.Errorf("%s: host %d: %w", path, len(p.Hosts), err)
		}
		if c.Details.Issuer != p.CA.Fingerprint() {
			return fmt.Errorf("%s: host %d is not signed by %s (delete the directory)", path, len(p.Hosts), CACertFile)
		}
		p.Hosts = append(p.Hosts, Host{Cert: c, Key: rec[len(rec)-32:]})
		good += int64(len(lenb) + len(rec))
	}
	if len(p.Hosts) < n {
		return os.Truncate(path, good)
	}
	return nil
}
