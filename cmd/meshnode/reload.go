package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/overlay"
)

// liveSections are the config sections a reload applies to the running node; a change to
// any other section is reported as needing a restart.
var liveSections = map[string]bool{"pki": true, "firewall": true, "logging": true}

// lighthouseSections apply live when the target supports it (see lighthouseTarget).
var lighthouseSections = map[string]bool{"static_host_map": true, "lighthouse": true, "relay": true,
	"preferred_ranges": true, "local_range": true}

// reloader re-reads the config (SIGHUP, `meshnode reload`) and applies what can change
// without a restart: PKI (cert, key, CA bundle, blocklist), firewall rules, static_host_map,
// lighthouse list and client settings, relays, preferred ranges, log level.
// Tunnels whose peer stays valid are kept.
type reloader struct {
	mu    sync.Mutex
	cfg   *overlay.Config
	pem   pkiFiles
	node  reloadTarget
	level *slog.LevelVar
	log   *slog.Logger
	now   func() time.Time
}

// reloadTarget is the part of *overlay.Node a reload drives.
type reloadTarget interface {
	SetPKI(*overlay.PKI) error
	SetFirewall(firewall.Config) error
}

// lighthouseTarget is implemented by targets that can also apply static_host_map, the
// lighthouse list and relay settings live.
type lighthouseTarget interface {
	SetLighthouses(*overlay.Config) error
}

type pkiFiles struct{ ca, cert, key []byte }

func readPKIFiles(c *overlay.Config) pkiFiles {
	ca, _ := overlay.ReadPEMSetting("pki.ca", c.PKI.CA)
	crt, _ := overlay.ReadPEMSetting("pki.cert", c.PKI.Cert)
	key, _ := overlay.ReadPEMSetting("pki.key", c.PKI.Key)
	return pkiFiles{ca, crt, key}
}

func newReloader(cfg *overlay.Config, _ *overlay.PKI, node reloadTarget, level *slog.LevelVar, log *slog.Logger) *reloader {
	return &reloader{cfg: cfg, pem: readPKIFiles(cfg), node: node, level: level, log: log, now: time.Now}
}

// reload applies the config file as it is now and says what changed. On error nothing of
// the new config is applied, except that a PKI already swapped in stays (it was valid).
func (r *reloader) reload() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changes, err := r.apply()
	if err != nil {
		r.log.Error("reload failed; keeping the running config", "err", err)
		return nil, fmt.Errorf("reload failed, the running config is unchanged: %w", err)
	}
	r.log.Info("config reloaded", "path", r.cfg.Path(), "changes", strings.Join(changes, "; "))
	return changes, nil
}

func (r *reloader) apply() ([]string, error) {
	path := r.cfg.Path()
	cfg, err := overlay.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	pki, err := overlay.LoadPKI(cfg, r.now())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pem := readPKIFiles(cfg)
	var changes []string
	pkiChanged := !reflect.DeepEqual(pem, r.pem) || !sectionEqual(r.cfg.PKI, cfg.PKI)
	fwChanged := !sectionEqual(r.cfg.Firewall, cfg.Firewall)
	if pkiChanged {
		if err := r.node.SetPKI(pki); err != nil {
			return nil, err
		}
		c := pki.Creds.Cert
		if !bytes.Equal(pem.cert, r.pem.cert) {
			changes = append(changes, fmt.Sprintf("pki.cert: new certificate %s for %s, valid until %s",
				short(c.Fingerprint()), c.Details.Name, c.Details.NotAfter.UTC().Format(time.RFC3339)))
		}
		if !bytes.Equal(pem.key, r.pem.key) {
			changes = append(changes, "pki.key: new key")
		}
		if !bytes.Equal(pem.ca, r.pem.ca) {
			changes = append(changes, "pki.ca: CA bundle changed")
		}
		if !sectionEqual(r.cfg.Blocklist(), cfg.Blocklist()) {
			changes = append(changes, fmt.Sprintf("pki.blocklist: now %d fingerprints", len(cfg.Blocklist())))
		}
		if !sectionEqual(r.cfg.PKI.DisconnectInvalid, cfg.PKI.DisconnectInvalid) {
			changes = append(changes, "pki.disconnect_invalid: changed; restart meshnode to apply")
		}
	}
	if fwChanged {
		if err := r.node.SetFirewall(cfg.Firewall); err != nil {
			return nil, fmt.Errorf("firewall: %w", err)
		}
		changes = append(changes, "firewall: rules replaced (flows they no longer allow are cut)")
	}
	lt, canLH := r.node.(lighthouseTarget)
	lhChanged := false
	for _, key := range changedSections(r.cfg, cfg) {
		switch key {
		case "static_host_map", "lighthouse", "relay", "preferred_ranges", "local_range":
			if canLH {
				lhChanged = true
				changes = append(changes, key+": applied")
			} else {
				changes = append(changes, key+": changed; restart meshnode to apply")
			}
		}
	}
	if lhChanged {
		if err := lt.SetLighthouses(cfg); err != nil {
			return nil, err
		}
	}
	routeChanges, err := r.reloadRoutes(r.cfg, cfg)
	if err != nil {
		return nil, err
	}
	changes = append(changes, routeChanges...)
	if cfg.Logging.Level != r.cfg.Logging.Level {
		r.level.Set(parseLevel(cfg.Logging.Level))
		changes = append(changes, fmt.Sprintf("logging.level: %s -> %s", r.cfg.Logging.Level, cfg.Logging.Level))
	}
	if !sectionEqual(withoutLevel(r.cfg.Logging), withoutLevel(cfg.Logging)) {
		changes = append(changes, "logging: format changed; restart meshnode to apply")
	}
	for _, key := range changedSections(r.cfg, cfg) {
		if !liveSections[key] && !lighthouseSections[key] && key != "tun" { // tun: reloadRoutes
			changes = append(changes, key+": changed; restart meshnode to apply")
		}
	}
	for _, w := range cfg.Warnings {
		changes = append(changes, "warning: "+w)
	}
	if len(changes) == 0 {
		changes = []string{"nothing changed"}
	}
	r.cfg, r.pem = cfg, pem
	return changes, nil
}

func withoutLevel(l overlay.LoggingConfig) overlay.LoggingConfig {
	l.Level = ""
	return l
}

func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}

// sectionEqual compares config values by their YAML form, which ignores where in the file
// they were written (yaml.Node carries line numbers).
func sectionEqual(a, b any) bool {
	ya, errA := yaml.Marshal(a)
	yb, errB := yaml.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ya, yb)
}

// changedSections lists the top-level keys whose values differ.
func changedSections(a, b *overlay.Config) []string {
	var out []string
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	for i := range va.NumField() {
		f := va.Type().Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		if !sectionEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, key)
		}
	}
	return out
}
