package authority

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Store types of ca.yml's store section.
const (
	StoreBolt     = "bolt"
	StorePostgres = "postgres"
)

// StoreConfig is ca.yml's store: a bbolt file path (the short form, `store: state/ca.db`),
// or a mapping naming the type. A PostgreSQL DSN usually holds a password, so besides dsn
// it may come from a file (dsn_file, e.g. a systemd credential) or an environment variable
// (dsn_env), keeping it out of the config.
type StoreConfig struct {
	Type    string `yaml:"type"`
	Path    string `yaml:"path"`
	DSN     string `yaml:"dsn"`
	DSNFile string `yaml:"dsn_file"`
	DSNEnv  string `yaml:"dsn_env"`
}

// UnmarshalYAML accepts a scalar (a bbolt path) or a mapping with only the known keys.
func (s *StoreConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = StoreConfig{Type: StoreBolt, Path: n.Value}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: store: want a path or a mapping (type, path, dsn, dsn_file, dsn_env)", n.Line)
	}
	known := map[string]bool{"type": true, "path": true, "dsn": true, "dsn_file": true, "dsn_env": true}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; !known[k] {
			return fmt.Errorf("line %d: field %s not found in store (type, path, dsn, dsn_file, dsn_env)", n.Content[i].Line, k)
		}
	}
	type plain StoreConfig
	return n.Decode((*plain)(s))
}

// check fills defaults and reports problems by key.
func (s *StoreConfig) check(c *Config, bad func(key, format string, args ...any)) {
	if s.Type == "" {
		s.Type = StoreBolt
	}
	switch s.Type {
	case StoreBolt:
		if s.Path == "" {
			s.Path = filepath.Join(c.StateDir, "ca.db")
		}
		s.Path = c.path(s.Path)
		if s.DSN != "" || s.DSNFile != "" || s.DSNEnv != "" {
			bad("store", "dsn, dsn_file and dsn_env are for type postgres")
		}
	case StorePostgres:
		n := 0
		for _, v := range []string{s.DSN, s.DSNFile, s.DSNEnv} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			bad("store", "type postgres needs exactly one of dsn, dsn_file, dsn_env")
		}
		if s.Path != "" {
			bad("store.path", "is for type bolt")
		}
		s.DSNFile = c.path(s.DSNFile)
	default:
		bad("store.type", "want %s or %s, got %q", StoreBolt, StorePostgres, s.Type)
	}
}

// ConnString returns the PostgreSQL DSN, read from the file or environment if so configured.
func (s StoreConfig) ConnString() (string, error) {
	switch {
	case s.DSNFile != "":
		b, err := os.ReadFile(s.DSNFile)
		if err != nil {
			return "", fmt.Errorf("store.dsn_file: %w", err)
		}
		if d := strings.TrimSpace(string(b)); d != "" {
			return d, nil
		}
		return "", fmt.Errorf("store.dsn_file %s is empty", s.DSNFile)
	case s.DSNEnv != "":
		if d := strings.TrimSpace(os.Getenv(s.DSNEnv)); d != "" {
			return d, nil
		}
		return "", fmt.Errorf("store.dsn_env: $%s is not set", s.DSNEnv)
	case s.DSN != "":
		return s.DSN, nil
	}
	return "", errors.New("store: no PostgreSQL DSN configured")
}

// String names the store for messages, never with the DSN (it may hold a password).
func (s StoreConfig) String() string {
	if s.Type == StorePostgres {
		return "the PostgreSQL store"
	}
	return s.Path
}
