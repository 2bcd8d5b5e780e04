package overlay

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// KeyStatus says what meshnode does with a key of Nebula's config format.
type KeyStatus string

// The statuses, as written in docs/CONFIG.md's status column.
const (
	// KeyImplemented: the key does what it does in Nebula.
	KeyImplemented KeyStatus = "implemented"
	// KeyIgnored: accepted so Nebula configs load, with one warning at load naming the key.
	KeyIgnored KeyStatus = "ignored"
	// KeyRefused: a config that sets it is refused with the reason (ignoring it would be unsafe).
	KeyRefused KeyStatus = "refused"
	// KeyPending: implemented by work in progress on another branch. Until its field exists
	// in Config the key is refused with the reason; once it does, Config decides.
	KeyPending KeyStatus = "pending"
	// KeyOurs: meshnode's own key, not Nebula's (only in docs; never in nebulaKeys).
	KeyOurs KeyStatus = "meshnode"
)

// NebulaKey is one key of Nebula's config and what meshnode does with it.
type NebulaKey struct {
	Path   string // dotted; list items as "[]": firewall.inbound[].port
	Status KeyStatus
	Why    string // for ignored, refused and pending keys: the reason given to the user
	// FreeForm: the value is free-form (maps keyed by address, lists of mappings we do not
	// read); keys below it are not checked.
	FreeForm bool
}

// nebulaKeys lists every key of Nebula 1.11.1's examples/config.yml, plus older Nebula keys
// meshnode reads. Keys with a Config field (or a firewall.Config field) are accepted by the
// field; the others are accepted only through this table. A branch that implements a key
// adds its field and flips its status here (the docs test fails until it does).
var nebulaKeys = []NebulaKey{
	{Path: "pki", Status: KeyImplemented},
	{Path: "pki.ca", Status: KeyImplemented},
	{Path: "pki.cert", Status: KeyImplemented},
	{Path: "pki.key", Status: KeyImplemented},
	{Path: "pki.blocklist", Status: KeyImplemented},
	{Path: "pki.blacklist", Status: KeyImplemented},
	{Path: "pki.disconnect_invalid", Status: KeyImplemented},
	{Path: "pki.initiating_version", Status: KeyImplemented},

	{Path: "static_host_map", Status: KeyImplemented, FreeForm: true},
	{Path: "static_map", Status: KeyImplemented},
	{Path: "static_map.cadence", Status: KeyIgnored, Why: "names are resolved at start and on reload, not re-queried on a timer"},
	{Path: "static_map.network", Status: KeyImplemented},
	{Path: "static_map.lookup_timeout", Status: KeyImplemented},

	{Path: "lighthouse", Status: KeyImplemented},
	{Path: "lighthouse.am_lighthouse", Status: KeyImplemented},
	{Path: "lighthouse.serve_dns", Status: KeyImplemented},
	{Path: "lighthouse.dns", Status: KeyImplemented},
	{Path: "lighthouse.dns.host", Status: KeyImplemented},
	{Path: "lighthouse.dns.port", Status: KeyImplemented},
	{Path: "lighthouse.interval", Status: KeyImplemented},
	{Path: "lighthouse.hosts", Status: KeyImplemented},
	{Path: "lighthouse.remote_allow_list", Status: KeyImplemented, FreeForm: true},
	{Path: "lighthouse.remote_allow_ranges", Status: KeyImplemented, FreeForm: true},
	{Path: "lighthouse.local_allow_list", Status: KeyImplemented, FreeForm: true},
	{Path: "lighthouse.local_allow_list.interfaces", Status: KeyImplemented},
	{Path: "lighthouse.advertise_addrs", Status: KeyImplemented},
	{Path: "lighthouse.calculated_remotes", Status: KeyIgnored, FreeForm: true, Why: "remotes are not guessed; a host's addresses come from static_host_map and the lighthouses"},

	{Path: "listen", Status: KeyImplemented},
	{Path: "listen.host", Status: KeyImplemented},
	{Path: "listen.port", Status: KeyImplemented},
	{Path: "listen.batch", Status: KeyImplemented},
	{Path: "listen.read_buffer", Status: KeyImplemented},
	{Path: "listen.write_buffer", Status: KeyImplemented},
	{Path: "listen.windows_bypass_wdf", Status: KeyIgnored, Why: "Windows only"},
	{Path: "listen.rebind_on_network_change", Status: KeyIgnored, Why: "macOS only"},
	{Path: "listen.send_recv_error", Status: KeyImplemented},
	{Path: "listen.accept_recv_error", Status: KeyImplemented},
	{Path: "listen.so_mark", Status: KeyImplemented},
	{Path: "listen.routines", Status: KeyImplemented}, // deprecated form of routines

	{Path: "routines", Status: KeyImplemented},

	{Path: "punchy", Status: KeyImplemented},
	{Path: "punchy.punch", Status: KeyImplemented},
	{Path: "punchy.respond", Status: KeyImplemented},
	{Path: "punchy.delay", Status: KeyImplemented},
	{Path: "punchy.respond_delay", Status: KeyImplemented},

	{Path: "cipher", Status: KeyImplemented},
	{Path: "preferred_ranges", Status: KeyImplemented},
	{Path: "local_range", Status: KeyImplemented},

	// Not serving a debug shell is the safe side, so the section is accepted and ignored.
	{Path: "sshd", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.enabled", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.listen", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.host_key", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.authorized_users", Status: KeyIgnored, FreeForm: true, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.authorized_users[].user", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.authorized_users[].keys", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.trusted_cas", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},
	{Path: "sshd.sandbox_dir", Status: KeyIgnored, Why: "meshnode has no SSH debug server"},

	{Path: "relay", Status: KeyImplemented},
	{Path: "relay.relays", Status: KeyImplemented},
	{Path: "relay.am_relay", Status: KeyImplemented},
	{Path: "relay.use_relays", Status: KeyImplemented},

	{Path: "tun", Status: KeyImplemented},
	{Path: "tun.disabled", Status: KeyImplemented},
	{Path: "tun.dev", Status: KeyImplemented},
	{Path: "tun.drop_local_broadcast", Status: KeyImplemented},
	{Path: "tun.drop_multicast", Status: KeyImplemented},
	{Path: "tun.tx_queue", Status: KeyImplemented},
	{Path: "tun.mtu", Status: KeyImplemented},
	{Path: "tun.routes", Status: KeyImplemented},
	{Path: "tun.routes[].mtu", Status: KeyImplemented},
	{Path: "tun.routes[].route", Status: KeyImplemented},
	{Path: "tun.unsafe_routes", Status: KeyImplemented},
	{Path: "tun.unsafe_routes[].route", Status: KeyImplemented},
	{Path: "tun.unsafe_routes[].via", Status: KeyImplemented},
	{Path: "tun.unsafe_routes[].via[].gateway", Status: KeyImplemented},
	{Path: "tun.unsafe_routes[].via[].weight", Status: KeyImplemented},
	{Path: "tun.unsafe_routes[].mtu", Status: KeyImplemented},
	{Path: "tun.unsafe_routes[].metric", Status: KeyImplemented},
	{Path: "tun.unsafe_routes[].install", Status: KeyImplemented},
	{Path: "tun.network_category", Status: KeyIgnored, Why: "Windows only"},
	{Path: "tun.windows_bypass_wdf", Status: KeyIgnored, Why: "Windows only"},
	{Path: "tun.use_system_route_table", Status: KeyImplemented},
	{Path: "tun.use_system_route_table_buffer_size", Status: KeyIgnored, Why: "routes are not taken from the system route table"},

	{Path: "logging", Status: KeyImplemented},
	{Path: "logging.level", Status: KeyImplemented},
	{Path: "logging.format", Status: KeyImplemented},
	{Path: "logging.disable_timestamp", Status: KeyImplemented},
	{Path: "logging.timestamp_format", Status: KeyIgnored, Why: "timestamps are RFC 3339"},

	{Path: "stats", Status: KeyImplemented},
	{Path: "stats.type", Status: KeyImplemented}, // prometheus; graphite warns (validate)
	{Path: "stats.prefix", Status: KeyIgnored, Why: "graphite is not supported"},
	{Path: "stats.protocol", Status: KeyIgnored, Why: "graphite is not supported"},
	{Path: "stats.host", Status: KeyIgnored, Why: "graphite is not supported"},
	{Path: "stats.interval", Status: KeyIgnored, Why: "Prometheus pulls; graphite is not supported"},
	{Path: "stats.listen", Status: KeyImplemented},
	{Path: "stats.path", Status: KeyImplemented},
	{Path: "stats.namespace", Status: KeyIgnored, Why: "metric names are fixed: meshnode_*"},
	{Path: "stats.subsystem", Status: KeyIgnored, Why: "metric names are fixed: meshnode_*"},
	{Path: "stats.message_metrics", Status: KeyIgnored, Why: "message counters are not kept; drops are in meshnode_drops_total"},
	{Path: "stats.lighthouse_metrics", Status: KeyIgnored, Why: "lighthouse message counters are not kept"},

	{Path: "handshakes", Status: KeyImplemented},
	{Path: "handshakes.try_interval", Status: KeyImplemented},
	{Path: "handshakes.retries", Status: KeyImplemented},
	{Path: "handshakes.query_buffer", Status: KeyIgnored, Why: "lighthouse queries are sent at once, not queued"},
	{Path: "handshakes.trigger_buffer", Status: KeyImplemented},

	{Path: "timers", Status: KeyImplemented},
	{Path: "timers.connection_alive_interval", Status: KeyImplemented},
	{Path: "timers.pending_deletion_interval", Status: KeyImplemented},

	{Path: "tunnels", Status: KeyImplemented},
	{Path: "tunnels.drop_inactive", Status: KeyImplemented},
	{Path: "tunnels.inactivity_timeout", Status: KeyImplemented},

	{Path: "firewall", Status: KeyImplemented},
	{Path: "firewall.outbound_action", Status: KeyImplemented},
	{Path: "firewall.inbound_action", Status: KeyImplemented},
	{Path: "firewall.default_local_cidr_any", Status: KeyImplemented},
	{Path: "firewall.conntrack", Status: KeyImplemented},
	{Path: "firewall.conntrack.tcp_timeout", Status: KeyImplemented},
	{Path: "firewall.conntrack.udp_timeout", Status: KeyImplemented},
	{Path: "firewall.conntrack.default_timeout", Status: KeyImplemented},
	{Path: "firewall.conntrack.max_connections", Status: KeyIgnored, Why: "conntrack is bounded by its timeouts, as in Nebula 1.6"},
	{Path: "firewall.outbound", Status: KeyImplemented},
	{Path: "firewall.inbound", Status: KeyImplemented},
}

func init() {
	// Every firewall rule key, in both directions (Nebula documents them in comments).
	for _, dir := range []string{"inbound", "outbound"} {
		for _, k := range []string{"port", "code", "proto", "host", "group", "groups", "cidr", "local_cidr", "ca_name", "ca_sha"} {
			nebulaKeys = append(nebulaKeys, NebulaKey{Path: "firewall." + dir + "[]." + k, Status: KeyImplemented})
		}
	}
}

// NebulaKeys returns the table of Nebula's keys and their status in meshnode.
func NebulaKeys() []NebulaKey { return append([]NebulaKey(nil), nebulaKeys...) }

// keyKind is how the config scan treats a key's value.
type keyKind int

const (
	kindLeaf    keyKind = iota // a scalar or a list of scalars: the decoder checks it
	kindSection                // a mapping whose keys are checked
	kindList                   // a list of sections (firewall.inbound)
	kindFree                   // free-form: nothing below is checked
)

// ConfigKeys returns every key path Config accepts through its fields, walked by yaml tags:
// nested sections joined by ".", list items as "[]". yaml.Node fields and maps are free-form.
func ConfigKeys() []string {
	m := map[string]keyKind{}
	structKeys(reflect.TypeOf(Config{}), "", m)
	return sortedKeys(m)
}

// AcceptedKeys is ConfigKeys plus the keys accepted only through the Nebula key table
// (ignored ones, sections of them).
func AcceptedKeys() []string { return sortedKeys(acceptedKinds()) }

func sortedKeys(m map[string]keyKind) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if !strings.HasSuffix(k, "[]") { // a list's item pattern, not a key
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

var (
	yamlNodeType = reflect.TypeOf(yaml.Node{})
	unmarshaler  = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

func structKeys(t reflect.Type, prefix string, out map[string]keyKind) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft == yamlNodeType || ft.Kind() == reflect.Map:
			out[key] = kindFree
		case ft.Kind() == reflect.Struct && ft.PkgPath() != "time":
			out[key] = kindSection
			structKeys(ft, key, out)
		case ft.Kind() == reflect.Slice && ft.Elem() == yamlNodeType:
			out[key] = kindFree
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out[key] = kindList
			out[key+"[]"] = kindSection
			structKeys(ft.Elem(), key+"[]", out)
		default:
			out[key] = kindLeaf
		}
	}
}

// acceptedKinds merges Config's keys with the table's: a table key without a field is a
// section when the table has keys below it, otherwise a leaf (or free-form).
func acceptedKinds() map[string]keyKind {
	m := map[string]keyKind{}
	structKeys(reflect.TypeOf(Config{}), "", m)
	parent := map[string]bool{}
	for _, k := range nebulaKeys {
		if i := strings.LastIndexByte(k.Path, '.'); i > 0 {
			parent[k.Path[:i]] = true
		}
	}
	for _, k := range nebulaKeys {
		if _, ok := m[k.Path]; ok || underFree(m, k.Path) {
			continue
		}
		switch {
		case k.FreeForm:
			m[k.Path] = kindFree
		case parent[k.Path+"[]"]:
			m[k.Path], m[k.Path+"[]"] = kindList, kindSection
		case parent[k.Path]:
			m[k.Path] = kindSection
		default:
			m[k.Path] = kindLeaf
		}
	}
	return m
}

// underFree reports whether a free-form key of m encloses path.
func underFree(m map[string]keyKind, path string) bool {
	for i := range len(path) {
		if path[i] == '.' || path[i] == '[' {
			if kind, ok := m[path[:i]]; ok && kind == kindFree {
				return true
			}
		}
	}
	return false
}

var nebulaKeyIndex = func() map[string]NebulaKey {
	m := map[string]NebulaKey{}
	for _, k := range nebulaKeys {
		m[k.Path] = k
	}
	return m
}()

// nebulaKey looks a key up in the table (by pattern, firewall.inbound[].port).
func nebulaKey(path string) (NebulaKey, bool) {
	k, ok := nebulaKeyIndex[path]
	return k, ok
}

// scanKeys checks every key of the document against what meshnode accepts, before
// decoding: unknown keys are errors with file:line, key path and a suggestion; pending
// and refused keys are errors with their reason; ignored keys give one warning each.
func scanKeys(name string, root *yaml.Node) (warnings []string, errs []error) {
	kinds := acceptedKinds()
	fields := map[string]keyKind{}
	structKeys(reflect.TypeOf(Config{}), "", fields)
	var walk func(n *yaml.Node, pattern, concrete string)
	walk = func(n *yaml.Node, pattern, concrete string) {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, pattern, concrete)
			}
		case yaml.SequenceNode:
			if kinds[pattern] != kindList {
				return
			}
			for i, c := range n.Content {
				walk(c, pattern+"[]", fmt.Sprintf("%s[%d]", concrete, i))
			}
		case yaml.MappingNode:
			first := map[string]int{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if l, dup := first[k.Value]; dup {
					errs = append(errs, fmt.Errorf("%s:%d: %s: key repeated (first at line %d)", name, k.Line, join(concrete, k.Value), l))
					continue
				}
				first[k.Value] = k.Line
				if k.Tag == "!!merge" { // <<: *anchor — the merged keys sit at this level
					walk(v, pattern, concrete)
					continue
				}
				p, cp := join(pattern, k.Value), join(concrete, k.Value)
				kind, ok := kinds[p]
				if !ok {
					errs = append(errs, fmt.Errorf("%s:%d: %s: unknown key %q%s", name, k.Line, cp, k.Value, suggest(kinds, pattern, k.Value)))
					continue
				}
				if nk, isNebula := nebulaKey(p); isNebula {
					_, hasField := fields[p]
					switch {
					case nk.Status == KeyRefused, nk.Status == KeyPending && !hasField:
						errs = append(errs, fmt.Errorf("%s:%d: %s: not supported by this build: %s", name, k.Line, cp, nk.Why))
						continue
					case nk.Status == KeyIgnored && kind != kindSection:
						warnings = append(warnings, fmt.Sprintf("%s:%d: %s has no effect in meshnode (%s); ignored", name, k.Line, cp, nk.Why))
					}
				}
				if kind == kindSection || kind == kindList {
					walk(v, p, cp)
				}
			}
		}
	}
	walk(root, "", "")
	return warnings, errs
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// suggest finds what an unknown key was probably meant to be: a close spelling among its
// siblings, else the same name elsewhere (a key put in the wrong section).
func suggest(kinds map[string]keyKind, parent, key string) string {
	best, bestD := "", len(key)/3+2
	for p := range kinds {
		sib, ok := strings.CutPrefix(p, join(parent, ""))
		if parent == "" {
			sib, ok = p, true
		}
		if !ok || strings.ContainsAny(sib, ".[") {
			continue
		}
		if d := editDistance(key, sib); d < bestD || d == bestD && p < best {
			best, bestD = p, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	var elsewhere []string
	for p := range kinds {
		if p == key || strings.HasSuffix(p, "."+key) {
			elsewhere = append(elsewhere, p)
		}
	}
	if len(elsewhere) > 0 {
		sort.Strings(elsewhere)
		return fmt.Sprintf(" (did you mean %s?)", strings.Join(elsewhere, " or "))
	}
	return ""
}

// editDistance is the Levenshtein distance (insert, delete, substitute; bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
