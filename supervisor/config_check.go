package supervisor

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// rawConfig mirrors deploy.toml. It is decoded fresh for every load, checked,
// and only then turned into a Config, because a failed decode leaves earlier
// values behind (PITFALLS: BurntSushi/toml). Key spelling is checked against
// deployerKeys and appKeys; TestSchemaMatchesRaw keeps them in step.
type rawConfig struct {
	Deployer rawDeployer       `toml:"deployer"`
	Apps     map[string]rawApp `toml:"apps"`
	Routes   rawRoutes         `toml:"routes"`
}

// rawRoutes is the [routes] table (RoutesConfig).
type rawRoutes struct {
	Redis          string   `toml:"redis"`
	KeyspaceEvents bool     `toml:"keyspace_events"`
	Resync         duration `toml:"resync"`
	HealthInterval duration `toml:"health_interval"`
}

type rawDeployer struct {
	Listen       string   `toml:"listen"`
	StateDir     string   `toml:"state_dir"`
	QueueTimeout duration `toml:"queue_timeout"`
	MaxQueued    int      `toml:"max_queued"`
	DrainTimeout duration `toml:"drain_timeout"`
	PIDFile      string   `toml:"pid_file"`
	Procs        anyValue `toml:"procs"`

	// The public side (config_public.go).
	Metrics           string   `toml:"metrics"`
	AccessLog         string   `toml:"access_log"`
	TLSListen         string   `toml:"tls_listen"`
	TLSCert           string   `toml:"tls_cert"`
	TLSKey            string   `toml:"tls_key"`
	TrustedProxies    []string `toml:"trusted_proxies"`
	MaxBody           anyValue `toml:"max_body"`
	ReadHeaderTimeout duration `toml:"read_header_timeout"`
	IdleTimeout       duration `toml:"idle_timeout"`
	MaxHeaderBytes    anyValue `toml:"max_header_bytes"`
	ControlUsers      []string `toml:"control_users"`
	ControlGroups     []string `toml:"control_groups"`
}

type rawApp struct {
	Command      []string          `toml:"command"`
	Version      string            `toml:"version"`
	Dir          string            `toml:"dir"`
	Env          map[string]string `toml:"env"`
	EnvFile      anyValue          `toml:"env_file"`
	Hosts        []string          `toml:"hosts"`
	Path         string            `toml:"path"`
	StripPath    bool              `toml:"strip_path"`
	Health       string            `toml:"health"`
	Instances    int               `toml:"instances"`
	ReadyTimeout duration          `toml:"ready_timeout"`
	Settle       duration          `toml:"settle"`
	HealthInt    duration          `toml:"health_interval"`
	HealthTO     duration          `toml:"health_timeout"`
	Rise         int               `toml:"rise"`
	Fall         int               `toml:"fall"`
	DrainTimeout duration          `toml:"drain_timeout"`
	StopSignal   string            `toml:"stop_signal"`
	StopTimeout  duration          `toml:"stop_timeout"`
	MaxBody      anyValue          `toml:"max_body"`
}

// duration holds the text of a duration key. Decoded into time.Duration, a
// bare integer would silently become nanoseconds (PITFALLS: BurntSushi/toml);
// through UnmarshalText it arrives as text. Non-string values are rejected
// by checkKeys with the key's line; parsing happens in loader.duration, so a
// bad duration is reported together with every other problem instead of
// aborting the decode.
type duration struct{ text string }

func (d *duration) UnmarshalText(b []byte) error {
	d.text = string(b)
	return nil
}

// anyValue holds the value of a key that takes more than one TOML type (a
// size: an integer or a string; procs: an integer or "auto") as decoded.
// checkKeys reports a type the key does not take, with its line; the
// loader parses the rest.
type anyValue struct{ val any }

func (v *anyValue) UnmarshalTOML(x any) error {
	v.val = x
	return nil
}

// kind is the TOML type a known key must have.
type kind int

const (
	kindTable    kind = iota
	kindString        // a TOML string
	kindInt           // a TOML integer
	kindBool          // a TOML boolean
	kindDuration      // a string such as "30s"
	kindStrings       // an array of strings
	kindSize          // a byte count: an integer, or a string such as "10MiB"
	kindProcs         // an integer, or the string "auto"
	kindPaths         // a string, or an array of strings
)

var deployerKeys = map[string]kind{
	"listen":        kindString,
	"state_dir":     kindString,
	"queue_timeout": kindDuration,
	"max_queued":    kindInt,
	"drain_timeout": kindDuration,
	"pid_file":      kindString,
	"procs":         kindProcs,

	"metrics":             kindString,
	"access_log":          kindString,
	"tls_listen":          kindString,
	"tls_cert":            kindString,
	"tls_key":             kindString,
	"trusted_proxies":     kindStrings,
	"max_body":            kindSize,
	"read_header_timeout": kindDuration,
	"idle_timeout":        kindDuration,
	"max_header_bytes":    kindSize,
	"control_users":       kindStrings,
	"control_groups":      kindStrings,
}

var routesKeys = map[string]kind{
	"redis":           kindString,
	"keyspace_events": kindBool,
	"resync":          kindDuration,
	"health_interval": kindDuration,
}

var appKeys = map[string]kind{
	"command":         kindStrings,
	"version":         kindString,
	"dir":             kindString,
	"env":             kindTable,
	"env_file":        kindPaths,
	"hosts":           kindStrings,
	"path":            kindString,
	"strip_path":      kindBool,
	"health":          kindString,
	"instances":       kindInt,
	"ready_timeout":   kindDuration,
	"settle":          kindDuration,
	"health_interval": kindDuration,
	"health_timeout":  kindDuration,
	"rise":            kindInt,
	"fall":            kindInt,
	"drain_timeout":   kindDuration,
	"stop_signal":     kindString,
	"stop_timeout":    kindDuration,
	"max_body":        kindSize,
}

// loader collects the problems of one config file.
type loader struct {
	file     string // path as given, for messages
	md       toml.MetaData
	lines    keyLocator
	problems []*ConfigError
	// readFiles: read the files the config names, as CheckConfig does:
	// tls_cert and tls_key parsed as a key pair, not only checked to exist,
	// and the apps' env files.
	readFiles bool
	// caseTwin: a table holds a known key and the same key spelled with
	// other case ("listen" and "Listen"); checkKeys reports the second.
	caseTwin bool
}

// addf records a problem at the line of key (none when key is nil or its
// line cannot be found).
func (l *loader) addf(key toml.Key, format string, args ...any) {
	line := 0
	if key != nil {
		line = l.lines.line(key)
	}
	l.problems = append(l.problems, &ConfigError{File: l.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// err joins the problems, sorted by line (those without a line last), or
// returns nil when there are none.
func (l *loader) err() error {
	slices.SortStableFunc(l.problems, func(a, b *ConfigError) int {
		return cmp.Compare(sortLine(a.Line), sortLine(b.Line))
	})
	errs := make([]error, len(l.problems))
	for i, p := range l.problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

func sortLine(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}

// parseConfig decodes and validates src, the contents of the file named
// name (as given) whose absolute path is abs.
func parseConfig(name, abs string, src []byte, readFiles bool) (*Config, error) {
	l := &loader{file: name, lines: keyLocator{src: string(src)}, readFiles: readFiles}

	// A generic decode first: it fails only on syntax, and gives every key
	// with its value, so spelling and types are checked for all keys at once.
	var tree map[string]any
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(&tree)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			l.problems = append(l.problems, &ConfigError{File: name, Line: pe.Position.Line, Msg: pe.Message})
		} else {
			l.problems = append(l.problems, &ConfigError{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")})
		}
		return nil, l.err()
	}
	l.md = md
	l.lines.keys = md.Keys()
	reported := l.checkKeys(tree)

	var raw rawConfig
	rawMD, err := toml.NewDecoder(bytes.NewReader(src)).Decode(&raw)
	if err != nil {
		// checkKeys has found the mistyped value this decode stumbled on.
		// Should it not have, toml's own message still names line and key.
		if len(l.problems) == 0 {
			l.addf(nil, "%s", strings.TrimPrefix(err.Error(), "toml: "))
		}
		return nil, l.err()
	}
	// Every key checkKeys accepts has a field, so this only guards against
	// the schema maps and rawConfig drifting apart.
	for _, key := range rawMD.Undecoded() {
		if !underAny(key, reported) {
			l.addf(key, "unknown key %q", key.String())
			reported = append(reported, key)
		}
	}

	if l.caseTwin {
		// toml fills a field from a key that matches it but for case when
		// none matches exactly, and from whichever of the two its map
		// iteration meets last when both are there: the field may hold the
		// misspelled key's value. The values are checked once it is gone.
		return nil, l.err()
	}

	dir := filepath.Dir(abs)
	cfg := &Config{Path: abs, Dir: dir, Apps: make(map[string]*AppConfig), src: src}
	cfg.Deployer = l.deployer(raw.Deployer, dir)
	cfg.Routes = l.routesTable(raw.Routes)
	l.apps(cfg, raw.Apps)
	if err := l.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkKeys reports every key that is not spelled exactly as deploy.toml
// defines it, and every value of the wrong TOML type. toml matches keys
// case-insensitively when no field matches exactly (PITFALLS), so
// MetaData.Undecoded alone would let "Version" through. It returns the keys
// it reported; keys below them are not reported again.
func (l *loader) checkKeys(tree map[string]any) []toml.Key {
	var reported []toml.Key
	for _, key := range l.md.Keys() {
		if underAny(key, reported) {
			continue
		}
		want, siblings, known := schemaKind(key)
		if !known {
			if s := caseVariant(key[len(key)-1], siblings); s != "" {
				l.addf(key, "unknown key %q: did you mean %q? Keys are case-sensitive", key.String(), s)
				if _, both := lookup(tree, append(slices.Clone(key[:len(key)-1]), s)); both {
					l.caseTwin = true
				}
			} else {
				l.addf(key, "unknown key %q", key.String())
			}
			reported = append(reported, key)
			continue
		}
		val, ok := lookup(tree, key)
		if !ok {
			continue // below an array of tables, reported at its parent
		}
		if problem := typeProblem(want, val); problem != "" {
			l.addf(key, "%s %s", key.String(), problem)
			reported = append(reported, key)
		}
	}
	return reported
}

// schemaKind returns the kind key must have, or known=false and the names
// allowed in its place (for a spelling hint).
func schemaKind(key toml.Key) (want kind, siblings []string, known bool) {
	top := []string{"deployer", "apps", "routes"}
	switch {
	case len(key) == 1:
		return kindTable, top, slices.Contains(top, key[0])
	case key[0] == "deployer" && len(key) == 2:
		want, known = deployerKeys[key[1]]
		return want, mapKeys(deployerKeys), known
	case key[0] == "routes" && len(key) == 2:
		want, known = routesKeys[key[1]]
		return want, mapKeys(routesKeys), known
	case key[0] == "apps" && len(key) == 2:
		return kindTable, nil, true // the name is checked by validate
	case key[0] == "apps" && len(key) == 3:
		want, known = appKeys[key[2]]
		return want, mapKeys(appKeys), known
	case key[0] == "apps" && len(key) == 4 && key[2] == "env":
		return kindString, nil, true
	}
	return 0, nil, false
}

func mapKeys(m map[string]kind) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// caseVariant returns the name in names that equals s but for case, or "".
func caseVariant(s string, names []string) string {
	for _, n := range names {
		if strings.EqualFold(n, s) {
			return n
		}
	}
	return ""
}

// underAny reports whether key is one of prefixes or lies below one.
func underAny(key toml.Key, prefixes []toml.Key) bool {
	return slices.ContainsFunc(prefixes, func(p toml.Key) bool {
		return len(p) <= len(key) && slices.Equal(p, key[:len(p)])
	})
}

// lookup returns the value of key in a generically decoded document.
func lookup(tree map[string]any, key toml.Key) (any, bool) {
	var cur any = tree
	for _, k := range key {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// typeProblem says how val fails to be of kind want, or "".
func typeProblem(want kind, val any) string {
	switch want {
	case kindTable:
		if _, ok := val.(map[string]any); !ok {
			return "must be a table, not " + describe(val)
		}
	case kindString:
		if _, ok := val.(string); !ok {
			return "must be a string, not " + describe(val)
		}
	case kindInt:
		if _, ok := val.(int64); !ok {
			return "must be an integer, not " + describe(val)
		}
	case kindBool:
		if _, ok := val.(bool); !ok {
			return "must be true or false, not " + describe(val)
		}
	case kindDuration:
		switch v := val.(type) {
		case string:
		case int64:
			return fmt.Sprintf(`= %d: a duration is a string with a unit, write "%ds"`, v, v)
		case float64:
			return fmt.Sprintf(`= %v: a duration is a string with a unit, write "%vs"`, v, v)
		default:
			return `must be a duration string such as "30s", not ` + describe(val)
		}
	case kindSize:
		switch v := val.(type) {
		case string:
		case int64:
			if v < 0 {
				return fmt.Sprintf("= %d must not be negative", v)
			}
		default:
			return `must be a size such as "10MiB" or a number of bytes, not ` + describe(val)
		}
	case kindProcs:
		switch val.(type) {
		case string, int64:
		default:
			return `must be "auto" or a number of threads, not ` + describe(val)
		}
	case kindPaths:
		if _, ok := val.(string); !ok {
			return stringsProblem(val, "a path or an array of paths")
		}
	case kindStrings:
		return stringsProblem(val, "an array of strings")
	}
	return ""
}

// stringsProblem says how val fails to be an array of strings, which the
// key's message calls want, or "".
func stringsProblem(val any, want string) string {
	arr, ok := val.([]any)
	if !ok {
		return "must be " + want + ", not " + describe(val)
	}
	for i, e := range arr {
		if _, ok := e.(string); !ok {
			return fmt.Sprintf("must be %s, but element %d is %s", want, i, describe(e))
		}
	}
	return ""
}

func describe(val any) string {
	switch val.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date/time"
}
