package nodekeys

// Enrollment (`meshnode enroll`, and the daemon's enroll section): join the mesh with a
// single-use token. The key pair is made here and
// only its public half is sent; the certificate, CA bundle and lighthouse list that come back
// are written next to the config, which gets the pki paths, the renewal section and the
// lighthouses.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority/api"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/overlay"
)

// EnrollOptions are what `meshnode enroll` is asked to do; Now and MinRetry are seams for
// tests.
type EnrollOptions struct {
	Token    string // the token string, as `mesh-cert invite` printed it
	Config   string // the config to create or update
	PKIDir   string // where key, cert and CA bundle go (default: beside the config's pki paths)
	Force    bool   // overwrite existing key and certificate files
	Timeout  time.Duration
	Progress time.Duration // how often "still waiting" is printed (default 5 s)
	MinRetry time.Duration // first retry delay while the service cannot be reached
	AtStart  bool          // the daemon enrolls from the config's enroll section
	Now      func() time.Time
}

// pkiPaths are the three files enrollment writes.
type pkiPaths struct{ ca, cert, key string }

// Enroll enrolls with o.Token, writes key, certificate and CA bundle, and writes the
// enrollment into the config; progress and notes go to out.
func Enroll(ctx context.Context, o EnrollOptions, out io.Writer) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Progress <= 0 {
		o.Progress = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute // the enroll command's default
	}
	tok, err := api.ParseToken(o.Token)
	if err != nil {
		return fmt.Errorf("%w\n  the token is damaged: copy the whole line that `mesh-cert invite` printed (it starts with mesh1.)", err)
	}
	doc, existed, err := readConfigDoc(o.Config)
	if err != nil {
		return err
	}
	paths, err := choosePKIPaths(doc, o.Config, o.PKIDir)
	if err != nil {
		return err
	}
	// Check everything that can fail locally before the token is spent.
	if !o.Force {
		for _, p := range []string{paths.key, paths.cert, paths.ca} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s already exists: this host seems enrolled already. To enroll again, ask the admin for a new invite and run with -force (the old key is replaced)", p)
			}
		}
	}
	for _, d := range []string{filepath.Dir(paths.key), filepath.Dir(paths.cert), filepath.Dir(paths.ca), filepath.Dir(o.Config)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cannot create %s: %w", d, err)
		}
		if err := checkWritable(d); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "making a key pair and enrolling with the CA service at %s (TLS pin %s…)\n", tok.URL, hex.EncodeToString(tok.Pin)[:16])
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	e, err := enrollWithRetry(ctx, o, tok.URL, out)
	if err != nil {
		return explainEnrollError(err, tok.URL)
	}
	d := e.Cert.Details
	fmt.Fprintf(out, "enrolled as %s, %s, groups [%s], certificate valid until %s\n", d.Name, d.Ips[0],
		strings.Join(d.Groups, ","), d.NotAfter.UTC().Format(time.RFC3339))

	files := []cert.File{
		{Path: paths.ca, Data: e.CABundle, Perm: 0o644},
		{Path: paths.cert, Data: e.CertPEM, Perm: 0o644},
		{Path: paths.key, Data: e.KeyPEM, Perm: 0o600},
	}
	if err := cert.WriteFiles(files, o.Force); err != nil {
		return fmt.Errorf("writing the key and certificate: %w\n  the token is spent: ask the admin for a new invite once this is fixed", err)
	}
	fmt.Fprintf(out, "wrote %s (private key, 0600), %s, %s\n", paths.key, paths.cert, paths.ca)

	notes := updateConfigDoc(doc, e, paths)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	enc.Close()
	b := buf.Bytes()
	perm := os.FileMode(0o600)
	if st, err := os.Stat(o.Config); err == nil {
		perm = st.Mode().Perm()
	}
	if err := cert.WriteFileAtomic(o.Config, b, perm, true); err != nil {
		return fmt.Errorf("writing the config: %w", err)
	}
	verb := "created"
	if existed {
		verb = "updated"
	}
	fmt.Fprintf(out, "%s %s: pki, renewal (%s), lighthouses %s\n", verb, o.Config, e.URL, lighthouseSummary(e.Lighthouses))
	for _, n := range notes {
		fmt.Fprintf(out, "note: %s\n", n)
	}
	cfg, err := overlay.LoadConfig(o.Config)
	if err != nil {
		return fmt.Errorf("the config written does not load, fix it by hand: %w", err)
	}
	if _, err := overlay.LoadPKI(cfg, o.Now()); err != nil {
		return fmt.Errorf("the pki written does not load: %w", err)
	}
	if !o.AtStart {
		fmt.Fprintf(out, "done: start the node with: meshnode -config %s\n", o.Config)
	}
	return nil
}

// Enrollment retry backoff while the CA service cannot be reached.
const (
	enrollMinRetry = time.Second
	enrollMaxRetry = 30 * time.Second
)

// enrollWithRetry asks the CA service until it answers, backing off while it cannot be
// reached or is rate limiting, until ctx's deadline; it prints progress while it waits. An
// answer about the token is final: asking again could not change it.
func enrollWithRetry(ctx context.Context, o EnrollOptions, url string, out io.Writer) (*client.Enrollment, error) {
	type result struct {
		e   *client.Enrollment
		err error
	}
	retry := o.MinRetry
	if retry <= 0 {
		retry = enrollMinRetry
	}
	tick := time.NewTicker(o.Progress)
	defer tick.Stop()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		done := make(chan result, 1)
		go func() {
			e, err := client.Enroll(ctx, o.Token, client.Options{Now: o.Now, Timeout: o.Timeout})
			done <- result{e, err}
		}()
		var res result
	wait:
		for {
			select {
			case res = <-done:
				break wait
			case <-tick.C:
				fmt.Fprintf(out, "still waiting for the CA service at %s (%s so far, giving up after %s)\n", url,
					time.Since(start).Round(time.Second), o.Timeout)
			}
		}
		if res.err == nil || !retryableEnrollError(res.err) {
			return res.e, res.err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < retry {
			return nil, res.err // no time left for another try
		}
		fmt.Fprintf(out, "attempt %d: %v; retrying in %s (giving up after %s)\n", attempt, res.err, retry, o.Timeout)
		select {
		case <-ctx.Done():
			return nil, res.err
		case <-time.After(retry):
		}
		retry = min(2*retry, enrollMaxRetry)
	}
}

// retryableEnrollError: the service could not be reached, was overloaded or asked us to
// slow down. The token is unspent in all these cases unless the service got the request and
// its answer was lost; then the next try says the token was used, which is final.
func retryableEnrollError(err error) bool {
	if errors.Is(err, client.ErrPinMismatch) || errors.Is(err, api.ErrTokenFormat) {
		return false
	}
	// A 5xx without an API error code comes from a proxy or an overloaded service.
	var se *client.StatusError
	return isNetError(err) || errors.Is(err, api.ErrRateLimited) || errors.Is(err, api.ErrNoActiveCA) ||
		(errors.As(err, &se) && se.Temporary())
}

// explainEnrollError turns an enrollment failure into what happened and what to do next.
func explainEnrollError(err error, url string) error {
	var next string
	switch {
	case errors.Is(err, api.ErrTokenExpired):
		next = "the token has expired: ask the admin for a new invite (mesh-cert invite -name ... prints a fresh token)"
	case errors.Is(err, api.ErrTokenUsed):
		next = "this token was used already (a token enrolls one host, once): ask the admin for a new invite"
	case errors.Is(err, api.ErrTokenUnknown):
		next = "the CA service does not know this token (replaced by a newer invite, or for another network): ask the admin for a new invite"
	case errors.Is(err, client.ErrPinMismatch):
		next = "the service at " + url + " is not the CA service the token names (its TLS certificate differs from the pin); nothing was sent to it. " +
			"Check that the address reaches the right machine; if the CA service's TLS identity was recreated, every token changed: ask the admin for a new invite"
	case errors.Is(err, api.ErrRevoked):
		next = "this host has been revoked by the admin; a revoked host cannot enroll again"
	case errors.Is(err, api.ErrRateLimited):
		next = "the CA service is rate limiting enrollments from this address: wait a minute and run the same command again (the token is still unused)"
	case errors.Is(err, api.ErrBadKey), errors.Is(err, api.ErrMalformed):
		next = "the CA service refused the request; check that meshnode and mesh-cert versions match"
	case errors.Is(err, context.DeadlineExceeded), isNetError(err):
		next = "cannot reach the CA service at " + url + ": check that `mesh-cert serve` runs and that this host can reach it (address, port, firewall), then run the same command again: unless the service got the request, the token is still unused"
	default:
		return err
	}
	return fmt.Errorf("%w\n  %s", err, next)
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, syscall.ECONNREFUSED)
}

func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".meshnode-enroll-*")
	if err != nil {
		return fmt.Errorf("cannot write to %s (run as root, or choose another -pki-dir/-config): %w", dir, err)
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

func lighthouseSummary(ls []api.Lighthouse) string {
	if len(ls) == 0 {
		return "(none: the CA service lists no lighthouses)"
	}
	var s []string
	for _, l := range ls {
		if len(l.Addrs) > 0 {
			s = append(s, fmt.Sprintf("%s at %s", l.VpnIP, strings.Join(l.Addrs, ",")))
		} else {
			s = append(s, l.VpnIP.String())
		}
	}
	return strings.Join(s, "; ")
}

// readConfigDoc reads the config as a YAML document (to keep the user's other settings and
// comments), or starts a fresh one when the file does not exist.
func readConfigDoc(path string) (*yaml.Node, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(defaultNodeConfig), &doc); err != nil {
			return nil, false, err
		}
		return &doc, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, true, fmt.Errorf("config %s: %w (fix it, or move it away to have a fresh one written)", path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 || doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, true, fmt.Errorf("config %s: not a YAML mapping", path)
	}
	return &doc, true, nil
}

// defaultNodeConfig is what enrollment starts from when there is no config yet; it fills
// in pki, renewal, static_host_map and lighthouse.
const defaultNodeConfig = `# Written by meshnode enroll. Nebula's format plus meshnode's renewal section.
pki:
  ca: ca.crt
  cert: host.crt
  key: host.key
static_host_map: {}
lighthouse:
  am_lighthouse: false
  interval: 60
  hosts: []
listen:
  host: 0.0.0.0
  port: 4242
punchy:
  punch: true
  respond: true
tun:
  dev: mesh0
  mtu: 1300
logging:
  level: info
  format: text
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: icmp
      host: any
`

// choosePKIPaths: -pki-dir with the config's file names (or ca.crt, host.crt, host.key);
// else the config's own paths; else beside the config. Relative paths in the config are
// taken as they are written (the daemon reads them relative to its working directory), so
// enrollment resolves them against the config's directory and writes absolute paths.
func choosePKIPaths(doc *yaml.Node, config, pkiDir string) (pkiPaths, error) {
	root := doc.Content[0]
	get := func(key, def string) string {
		if v := lookup(root, "pki", key); v != nil && v.Kind == yaml.ScalarNode && v.Value != "" && !strings.Contains(v.Value, "-----BEGIN") {
			return v.Value
		}
		return def
	}
	cfgDir, err := filepath.Abs(filepath.Dir(config))
	if err != nil {
		return pkiPaths{}, err
	}
	p := pkiPaths{ca: get("ca", "ca.crt"), cert: get("cert", "host.crt"), key: get("key", "host.key")}
	for _, s := range []*string{&p.ca, &p.cert, &p.key} {
		switch {
		case pkiDir != "":
			d, err := filepath.Abs(pkiDir)
			if err != nil {
				return pkiPaths{}, err
			}
			*s = filepath.Join(d, filepath.Base(*s))
		case !filepath.IsAbs(*s):
			*s = filepath.Join(cfgDir, *s)
		}
	}
	if p.ca == p.cert || p.ca == p.key || p.cert == p.key {
		return pkiPaths{}, fmt.Errorf("pki.ca, pki.cert and pki.key must be three different files")
	}
	return p, nil
}

// updateConfigDoc writes the enrollment into the config: pki paths, renewal, and for each
// lighthouse other than this host its underlay addresses (static_host_map) and VPN IP
// (lighthouse.hosts, and relay.relays when the config has no relay section). A host that is
// itself on the lighthouse list becomes a lighthouse and a relay. It returns notes for the
// user.
func updateConfigDoc(doc *yaml.Node, e *client.Enrollment, p pkiPaths) []string {
	root := doc.Content[0]
	set(root, scalar(p.ca), "pki", "ca")
	set(root, scalar(p.cert), "pki", "cert")
	set(root, scalar(p.key), "pki", "key")
	set(root, scalar(e.URL), "renewal", "url")
	set(root, scalar(hex.EncodeToString(e.Pin)), "renewal", "pin")
	set(root, scalar(hex.EncodeToString(e.ServiceKey)), "renewal", "service_key")

	var notes []string
	me := e.Cert.VpnIP()
	hosts := lookup(root, "lighthouse", "hosts")
	var have []string
	if hosts != nil && hosts.Kind == yaml.SequenceNode {
		for _, h := range hosts.Content {
			have = append(have, h.Value)
		}
	}
	iAmLighthouse := false
	for _, l := range e.Lighthouses {
		if l.VpnIP == me {
			iAmLighthouse = true
			continue
		}
		if len(l.Addrs) > 0 {
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
			for _, a := range l.Addrs {
				seq.Content = append(seq.Content, quoted(a))
			}
			if m := lookup(root, "static_host_map"); m != nil && m.Kind == yaml.MappingNode {
				m.Style = 0 // the empty default is written {}; entries go one per line
			}
			setKey(root, seq, quoted(l.VpnIP.String()), "static_host_map")
		} else {
			notes = append(notes, fmt.Sprintf("the CA service gave no underlay address for lighthouse %s: add it to static_host_map by hand", l.VpnIP))
		}
		if !slices.Contains(have, l.VpnIP.String()) {
			have = append(have, l.VpnIP.String())
		}
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	for _, h := range have {
		if a, err := netip.ParseAddr(h); err == nil && a == me {
			continue
		}
		seq.Content = append(seq.Content, quoted(h))
	}
	if iAmLighthouse {
		set(root, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"}, "lighthouse", "am_lighthouse")
		notes = append(notes, "this host is on the CA service's lighthouse list: lighthouse.am_lighthouse is set to true")
	}
	set(root, seq, "lighthouse", "hosts")
	// Relays, unless the config already says: lighthouses relay and hosts name them, so two
	// hosts whose NATs defeat hole punching still reach each other (a relay that does not
	// relay only refuses the request). A relay section written by hand is left alone.
	if lookup(root, "relay") == nil {
		if iAmLighthouse {
			set(root, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"}, "relay", "am_relay")
		} else if len(seq.Content) > 0 {
			relays := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
			for _, h := range seq.Content {
				relays.Content = append(relays.Content, quoted(h.Value))
			}
			set(root, relays, "relay", "relays")
		}
	}
	if len(e.Lighthouses) == 0 {
		notes = append(notes, "the CA service lists no lighthouses: add static_host_map entries for the hosts to reach")
	}
	return notes
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

func quoted(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Style: yaml.DoubleQuotedStyle}
}

// lookup follows keys through nested mappings.
func lookup(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

// set puts v at the path of keys, making mappings on the way (a non-mapping in the way is
// replaced).
func set(root, v *yaml.Node, keys ...string) {
	last := keys[len(keys)-1]
	setKey(root, v, scalar(last), keys[:len(keys)-1]...)
}

func setKey(root, v, key *yaml.Node, parents ...string) {
	n := root
	for _, k := range parents {
		child := lookup(n, k)
		if child == nil || child.Kind != yaml.MappingNode {
			nm := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			putKey(n, scalar(k), nm)
			child = nm
		}
		n = child
	}
	putKey(n, key, v)
}

func putKey(m, key, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key.Value {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, key, v)
}

// The daemon's side of the config's enroll section: `meshnode -config node.yml` on a host
// that has no pki files yet enrolls first, exactly as `meshnode enroll` would, then starts.

// pkiFilesOnDisk splits the config's pki paths into those that exist and those that do not,
// named by their keys. The paths are checked as the daemon reads them.
func pkiFilesOnDisk(cfg *overlay.Config) (have, missing []string) {
	for _, kv := range [][2]string{{"pki.ca", cfg.PKI.CA}, {"pki.cert", cfg.PKI.Cert}, {"pki.key", cfg.PKI.Key}} {
		if _, err := os.Lstat(kv[1]); err == nil {
			have = append(have, kv[0]+" "+kv[1])
		} else {
			missing = append(missing, kv[0]+" "+kv[1])
		}
	}
	return have, missing
}

// EnrollToken reads the section's token (from token_file if that is set) and checks its form.
func EnrollToken(ec overlay.EnrollConfig) (string, api.Token, error) {
	s := ec.Token
	if ec.TokenFile != "" {
		b, err := os.ReadFile(ec.TokenFile)
		if err != nil {
			return "", api.Token{}, fmt.Errorf("enroll.token_file: %w", err)
		}
		s = strings.TrimSpace(string(b))
	}
	key := "enroll.token"
	if ec.TokenFile != "" {
		key = "enroll.token_file " + ec.TokenFile
	}
	tok, err := api.ParseToken(s)
	if err != nil {
		return "", api.Token{}, fmt.Errorf("%s: %w (copy the whole line `mesh-cert invite` printed; it starts with mesh1.)", key, err)
	}
	return s, tok, nil
}

// EnrollState is what the enroll section means for this start: nothing to do (section
// absent, or the pki files exist), enroll (all pki files missing), or an error (some
// missing: enrolling would replace a key that may still be in use).
func EnrollState(cfg *overlay.Config) (enrollNow bool, err error) {
	if !cfg.Enroll.Enabled() {
		return false, nil
	}
	have, missing := pkiFilesOnDisk(cfg)
	switch {
	case len(missing) == 0:
		return false, nil
	case len(have) > 0:
		return false, fmt.Errorf("enroll: %s exist(s) but %s missing: restore the missing file(s); or, to enroll again, "+
			"move the others away and put a new invite's token in the enroll section (ask the admin: mesh-cert invite)",
			strings.Join(have, ", "), strings.Join(missing, ", "))
	}
	return true, nil
}

// EnrollAtStart enrolls when the section asks for it and returns the config as enrollment
// rewrote it (pki paths, renewal, lighthouses); otherwise it returns cfg. Progress goes to
// the log.
func EnrollAtStart(ctx context.Context, cfg *overlay.Config, configPath string, log *slog.Logger) (*overlay.Config, error) {
	now, err := EnrollState(cfg)
	if err != nil || !cfg.Enroll.Enabled() {
		return cfg, err
	}
	if !now {
		log.Info("the pki files exist: the enroll section is ignored (its token was spent at enrollment; the section may be removed)")
		return cfg, nil
	}
	token, tok, err := EnrollToken(cfg.Enroll)
	if err != nil {
		return nil, err
	}
	log.Info("no pki files yet: enrolling with the token of the enroll section", "ca_service", tok.URL,
		"key", cfg.PKI.Key, "timeout", cfg.Enroll.Timeout)
	w := &logWriter{log: log.With("part", "enroll")}
	err = Enroll(ctx, EnrollOptions{Token: token, Config: configPath, Timeout: cfg.Enroll.Timeout, Progress: 10 * time.Second,
		AtStart: true}, w)
	w.flush()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	cfg, err = overlay.LoadConfig(configPath)
	if err != nil {
		return nil, fmt.Errorf("the config written by enrollment: %w", err)
	}
	return cfg, nil
}

// logWriter turns the enroll command's lines of output into log records.
type logWriter struct {
	log *slog.Logger
	buf []byte
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if line := strings.TrimSpace(string(w.buf[:i])); line != "" {
			w.log.Info(line)
		}
		w.buf = w.buf[i+1:]
	}
}

func (w *logWriter) flush() {
	if line := strings.TrimSpace(string(w.buf)); line != "" {
		w.log.Info(line)
	}
	w.buf = nil
}
