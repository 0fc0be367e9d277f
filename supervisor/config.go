package supervisor

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/deployer/deployer/sockets"
)

// Defaults applied by LoadConfig to keys left out.
const (
	DefaultListen       = "127.0.0.1:8080"
	DefaultStateDir     = "run"
	DefaultQueueTimeout = 30 * time.Second
	DefaultMaxQueued    = 10000
	DefaultDrainTimeout = 30 * time.Second
	DefaultReadyTimeout = 30 * time.Second
	// DefaultSettle is how long a new version must stay up and healthy after
	// its first passing health check before traffic moves to it.
	DefaultSettle      = 500 * time.Millisecond
	DefaultStopTimeout = 10 * time.Second
	DefaultHealth      = "/healthz"
)

// Further defaults and limits of deploy.toml.
const (
	DefaultDir        = "."
	DefaultPath       = "/"
	DefaultInstances  = 1
	DefaultStopSignal = syscall.SIGTERM
	MaxInstances      = 64
)

// ErrConfig is matched (errors.Is) by every error LoadConfig returns for a
// file that exists but is not a valid deploy.toml: syntax, unknown keys,
// values. The CLI maps it to exit status 2.
var ErrConfig = errors.New("supervisor: invalid config")

// ErrInvalidVersion is matched by the error ValidVersion returns.
var ErrInvalidVersion = errors.New("supervisor: invalid version")

// ConfigError is one problem in a config file. LoadConfig joins one per
// problem (errors.Join), sorted by line; each matches ErrConfig.
type ConfigError struct {
	File string // the path as given to LoadConfig
	Line int    // 1-based; 0 when the line is not known
	Msg  string
}

// Error formats the problem the way compilers do, so editors can jump to it:
// "deploy.toml:12: message", or "deploy.toml: message" without a line.
func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Is makes errors.Is(err, ErrConfig) hold for every ConfigError.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// Config is a validated deploy.toml. All paths are absolute.
type Config struct {
	Path     string // the file it was read from, absolute
	Dir      string // its directory: relative paths are relative to it
	Deployer DeployerConfig
	Apps     map[string]*AppConfig
}

// DeployerConfig is the [deployer] table.
type DeployerConfig struct {
	Listen       string // "" = no built-in proxy
	StateDir     string // absolute
	QueueTimeout time.Duration
	MaxQueued    int
	DrainTimeout time.Duration
}

// AppConfig is one [apps.NAME] table, defaults filled in. Command, Dir and
// the Env values may hold placeholders (see Expand); they were checked to
// name only known ones, and never both {port} and {socket}.
type AppConfig struct {
	Name         string
	Command      []string
	Version      string
	Dir          string // may hold placeholders; relative to Config.Dir after expansion
	Env          map[string]string
	Hosts        []string
	Path         string
	StripPath    bool
	Health       string // "" = a successful connect is enough
	Instances    int
	ReadyTimeout time.Duration
	// Settle: after its first passing health check a new version must stay
	// up and keep passing for this long before traffic moves to it, so a
	// version that crashes right after boot fails its swap instead of taking
	// traffic. 0 moves traffic at the first passing check.
	Settle       time.Duration
	DrainTimeout time.Duration
	StopSignal   syscall.Signal
	StopTimeout  time.Duration
}

// AppNames returns the app names, sorted.
func (c *Config) AppNames() []string {
	names := make([]string, 0, len(c.Apps))
	for name := range c.Apps {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// UsesPort reports whether the app listens on TCP ({port} in its command, dir or env).
func (a *AppConfig) UsesPort() bool {
	return slices.ContainsFunc(a.placeholderFields(), func(s string) bool {
		return strings.Contains(s, "{port}")
	})
}

// placeholderFields returns every string in which placeholders are expanded.
func (a *AppConfig) placeholderFields() []string {
	fields := append([]string{a.Dir}, a.Command...)
	for _, val := range a.Env {
		fields = append(fields, val)
	}
	return fields
}

// Vars fill the placeholders {app} {version} {socket} {port} {instance}.
type Vars struct {
	App, Version, Socket string
	Port, Instance       int
}

// Expand replaces the placeholders in s: {port} and {instance} become
// decimal numbers, any other text is left as it is. It makes a single pass,
// so a value that itself contains "{app}" is not expanded again.
func Expand(s string, v Vars) string {
	if !strings.Contains(s, "{") {
		return s
	}
	return strings.NewReplacer(
		"{app}", v.App,
		"{version}", v.Version,
		"{socket}", v.Socket,
		"{port}", strconv.Itoa(v.Port),
		"{instance}", strconv.Itoa(v.Instance),
	).Replace(s)
}

// ValidVersion reports whether v can name a version: it ends up in file names.
// A valid version has 1 to 64 characters of [A-Za-z0-9._+-] and starts with
// a letter or digit (so never "." or ".."). The error matches ErrInvalidVersion.
func ValidVersion(v string) error {
	if problem := versionProblem(v); problem != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidVersion, v, problem)
	}
	return nil
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// versionProblem says what is wrong with v, or "" when it is a valid version.
func versionProblem(v string) string {
	if versionRE.MatchString(v) {
		return ""
	}
	return "want 1 to 64 characters of A-Z a-z 0-9 . _ + -, starting with a letter or digit"
}

// LoadConfig reads, strictly decodes and validates the deploy.toml at path.
// Errors name file:line where known; several problems are joined.
//
// A missing file gives an error matching fs.ErrNotExist. Any problem with
// the file's contents gives errors matching ErrConfig: one *ConfigError per
// problem, joined with errors.Join and sorted by line, all of them reported
// at once except that a syntax error, or a value of the wrong TOML type,
// stops before the values are checked.
//
// Checks that depend on the environment (does dir exist, is the command on
// PATH) are left to launch time: dir and command may hold placeholders.
// Socket path lengths are checked for the configured version only; a swap
// to a longer version name must check again.
func LoadConfig(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("supervisor: config file %s does not exist: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("supervisor: read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("supervisor: config path %s: %w", path, err)
	}
	return parseConfig(path, abs, src)
}

// rawConfig mirrors deploy.toml. It is decoded fresh for every load, checked,
// and only then turned into a Config, because a failed decode leaves earlier
// values behind (PITFALLS: BurntSushi/toml). Key spelling is checked against
// deployerKeys and appKeys; TestSchemaMatchesRaw keeps them in step.
type rawConfig struct {
	Deployer rawDeployer       `toml:"deployer"`
	Apps     map[string]rawApp `toml:"apps"`
}

type rawDeployer struct {
	Listen       string   `toml:"listen"`
	StateDir     string   `toml:"state_dir"`
	QueueTimeout duration `toml:"queue_timeout"`
	MaxQueued    int      `toml:"max_queued"`
	DrainTimeout duration `toml:"drain_timeout"`
}

type rawApp struct {
	Command      []string          `toml:"command"`
	Version      string            `toml:"version"`
	Dir          string            `toml:"dir"`
	Env          map[string]string `toml:"env"`
	Hosts        []string          `toml:"hosts"`
	Path         string            `toml:"path"`
	StripPath    bool              `toml:"strip_path"`
	Health       string            `toml:"health"`
	Instances    int               `toml:"instances"`
	ReadyTimeout duration          `toml:"ready_timeout"`
	Settle       duration          `toml:"settle"`
	DrainTimeout duration          `toml:"drain_timeout"`
	StopSignal   string            `toml:"stop_signal"`
	StopTimeout  duration          `toml:"stop_timeout"`
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

// kind is the TOML type a known key must have.
type kind int

const (
	kindTable    kind = iota
	kindString        // a TOML string
	kindInt           // a TOML integer
	kindBool          // a TOML boolean
	kindDuration      // a string such as "30s"
	kindStrings       // an array of strings
)

var deployerKeys = map[string]kind{
	"listen":        kindString,
	"state_dir":     kindString,
	"queue_timeout": kindDuration,
	"max_queued":    kindInt,
	"drain_timeout": kindDuration,
}

var appKeys = map[string]kind{
	"command":       kindStrings,
	"version":       kindString,
	"dir":           kindString,
	"env":           kindTable,
	"hosts":         kindStrings,
	"path":          kindString,
	"strip_path":    kindBool,
	"health":        kindString,
	"instances":     kindInt,
	"ready_timeout": kindDuration,
	"settle":        kindDuration,
	"drain_timeout": kindDuration,
	"stop_signal":   kindString,
	"stop_timeout":  kindDuration,
}

// loader collects the problems of one config file.
type loader struct {
	file     string // path as given, for messages
	md       toml.MetaData
	lines    keyLocator
	problems []*ConfigError
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
func parseConfig(name, abs string, src []byte) (*Config, error) {
	l := &loader{file: name, lines: keyLocator{src: string(src)}}

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

	dir := filepath.Dir(abs)
	cfg := &Config{Path: abs, Dir: dir, Apps: make(map[string]*AppConfig)}
	cfg.Deployer = l.deployer(raw.Deployer, dir)
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
	top := []string{"deployer", "apps"}
	switch {
	case len(key) == 1:
		return kindTable, top, slices.Contains(top, key[0])
	case key[0] == "deployer" && len(key) == 2:
		want, known = deployerKeys[key[1]]
		return want, mapKeys(deployerKeys), known
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
	case kindStrings:
		arr, ok := val.([]any)
		if !ok {
			return "must be an array of strings, not " + describe(val)
		}
		for i, e := range arr {
			if _, ok := e.(string); !ok {
				return fmt.Sprintf("must be an array of strings, but element %d is %s", i, describe(e))
			}
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

// defaultDeployer and defaultApp are the one place defaults are applied:
// validation starts from them and overrides every key the file defines.
func defaultDeployer() DeployerConfig {
	return DeployerConfig{
		Listen:       DefaultListen,
		StateDir:     DefaultStateDir,
		QueueTimeout: DefaultQueueTimeout,
		MaxQueued:    DefaultMaxQueued,
		DrainTimeout: DefaultDrainTimeout,
	}
}

// defaultApp takes drain_timeout from [deployer].
func defaultApp(name string, d DeployerConfig) *AppConfig {
	return &AppConfig{
		Name:         name,
		Dir:          DefaultDir,
		Env:          map[string]string{},
		Hosts:        []string{"*"},
		Path:         DefaultPath,
		Health:       DefaultHealth,
		Instances:    DefaultInstances,
		ReadyTimeout: DefaultReadyTimeout,
		Settle:       DefaultSettle,
		DrainTimeout: d.DrainTimeout,
		StopSignal:   DefaultStopSignal,
		StopTimeout:  DefaultStopTimeout,
	}
}

// deployer validates [deployer] and fills in its defaults. A relative
// state_dir is made absolute against dir, the directory of deploy.toml.
func (l *loader) deployer(raw rawDeployer, dir string) DeployerConfig {
	d := defaultDeployer()
	key := func(k string) toml.Key { return toml.Key{"deployer", k} }
	if l.defined(key("listen")) {
		d.Listen = raw.Listen
		if d.Listen != "" {
			if _, port, err := net.SplitHostPort(d.Listen); err != nil || port == "" {
				l.addf(key("listen"), `deployer.listen %q: want host:port such as "127.0.0.1:8080", or "" for no proxy`, d.Listen)
			}
		}
	}
	if l.defined(key("state_dir")) {
		d.StateDir = raw.StateDir
		if d.StateDir == "" {
			l.addf(key("state_dir"), "deployer.state_dir must not be empty")
		}
	}
	if !filepath.IsAbs(d.StateDir) {
		d.StateDir = filepath.Join(dir, d.StateDir)
	}
	d.StateDir = filepath.Clean(d.StateDir)
	d.QueueTimeout = l.duration(key("queue_timeout"), raw.QueueTimeout, d.QueueTimeout)
	d.DrainTimeout = l.duration(key("drain_timeout"), raw.DrainTimeout, d.DrainTimeout)
	if l.defined(key("max_queued")) {
		d.MaxQueued = raw.MaxQueued
		if d.MaxQueued < 1 {
			l.addf(key("max_queued"), "deployer.max_queued must be at least 1, not %d", d.MaxQueued)
		}
	}
	if n := len(controlSocket(d.StateDir)); n > sockets.MaxPathLen {
		l.addf(key("state_dir"), "control socket path %q is %d bytes, more than the %d a unix socket allows: use a shorter state_dir",
			controlSocket(d.StateDir), n, sockets.MaxPathLen)
	}
	return d
}

var appNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// apps validates every [apps.NAME] and adds it to cfg with defaults filled in.
func (l *loader) apps(cfg *Config, raws map[string]rawApp) {
	if len(raws) == 0 {
		l.addf(toml.Key{"apps"}, "no apps defined: add an [apps.NAME] table")
		return
	}
	order := l.appOrder(raws)
	for _, name := range order {
		cfg.Apps[name] = l.app(name, raws[name], cfg.Deployer)
	}
	l.routes(cfg, order)
}

// appOrder returns the app names in the order the file defines them, so
// that a conflict is reported at the later app.
func (l *loader) appOrder(raws map[string]rawApp) []string {
	var names []string
	for _, key := range l.md.Keys() {
		if len(key) >= 2 && key[0] == "apps" && !slices.Contains(names, key[1]) {
			if _, ok := raws[key[1]]; ok {
				names = append(names, key[1])
			}
		}
	}
	return names
}

// app validates one app and fills in its defaults. Problems are recorded;
// the result is then only good for further checks.
func (l *loader) app(name string, raw rawApp, d DeployerConfig) *AppConfig {
	a := defaultApp(name, d)
	table := toml.Key{"apps", name}
	key := func(k string) toml.Key { return toml.Key{"apps", name, k} }
	prefix := table.String() + "."

	if !appNameRE.MatchString(name) {
		l.addf(table, "app name %q: want 1 to 32 characters of a-z 0-9 _ -, starting with a letter or digit (it names a directory)", name)
	}
	switch {
	case !l.defined(key("command")):
		l.addf(table, "app %q has no command", name)
	case len(raw.Command) == 0 || raw.Command[0] == "":
		l.addf(key("command"), "%scommand must name a program", prefix)
	}
	a.Command = raw.Command
	if !l.defined(key("version")) {
		l.addf(table, "app %q has no version: set the version `deployer start` launches", name)
	} else if problem := versionProblem(raw.Version); problem != "" {
		l.addf(key("version"), "%sversion %q: %s", prefix, raw.Version, problem)
	}
	a.Version = raw.Version
	if l.defined(key("dir")) {
		a.Dir = raw.Dir
		if a.Dir == "" {
			l.addf(key("dir"), `%sdir must not be empty: "." is the directory of deploy.toml`, prefix)
		}
	}
	maps.Copy(a.Env, raw.Env)
	if l.defined(key("hosts")) {
		a.Hosts = raw.Hosts
		if len(a.Hosts) == 0 {
			l.addf(key("hosts"), `%shosts must not be empty: "*" matches any host`, prefix)
		}
		for _, h := range a.Hosts {
			if problem := hostProblem(h); problem != "" {
				l.addf(key("hosts"), "%shosts entry %q: %s", prefix, h, problem)
			}
		}
	}
	if l.defined(key("path")) {
		a.Path = raw.Path
		if !strings.HasPrefix(a.Path, "/") {
			l.addf(key("path"), "%spath %q must start with /", prefix, a.Path)
		}
	}
	a.StripPath = raw.StripPath
	if l.defined(key("health")) {
		a.Health = raw.Health
		if a.Health != "" && !strings.HasPrefix(a.Health, "/") {
			l.addf(key("health"), `%shealth %q must start with /, or be "" to only check that the socket accepts`, prefix, a.Health)
		}
	}
	if l.defined(key("instances")) {
		a.Instances = raw.Instances
		if a.Instances < 1 || a.Instances > MaxInstances {
			l.addf(key("instances"), "%sinstances must be 1 to %d, not %d", prefix, MaxInstances, a.Instances)
		}
	}
	a.ReadyTimeout = l.duration(key("ready_timeout"), raw.ReadyTimeout, a.ReadyTimeout)
	if d, err := time.ParseDuration(raw.Settle.text); l.defined(key("settle")) && err == nil && d == 0 {
		a.Settle = 0 // "0s": no settle time, unlike other durations
	} else {
		a.Settle = l.duration(key("settle"), raw.Settle, a.Settle)
	}
	if a.Settle >= a.ReadyTimeout {
		l.addf(key("settle"), "%ssettle (%s) must be shorter than ready_timeout (%s)", prefix, a.Settle, a.ReadyTimeout)
	}
	a.DrainTimeout = l.duration(key("drain_timeout"), raw.DrainTimeout, a.DrainTimeout)
	a.StopTimeout = l.duration(key("stop_timeout"), raw.StopTimeout, a.StopTimeout)
	if l.defined(key("stop_signal")) {
		sig, ok := parseSignal(raw.StopSignal)
		if !ok {
			l.addf(key("stop_signal"), "%sstop_signal %q: want one of %s", prefix, raw.StopSignal, signalNames)
		}
		a.StopSignal = sig
	}
	l.placeholders(a)
	l.socketPaths(a, d.StateDir)
	return a
}

// defined reports whether key is set in the file.
func (l *loader) defined(key toml.Key) bool { return l.md.IsDefined(key...) }

// duration parses a duration key, or returns def when the key is absent.
// A value that is not a string was already reported by checkKeys.
func (l *loader) duration(key toml.Key, d duration, def time.Duration) time.Duration {
	if !l.defined(key) || l.md.Type(key...) != "String" {
		return def
	}
	got, err := time.ParseDuration(d.text)
	switch {
	case err != nil:
		l.addf(key, `%s = %q is not a duration: write e.g. "30s", "1m30s" or "500ms"`, key.String(), d.text)
		return def
	case got <= 0:
		l.addf(key, "%s = %q must be more than zero", key.String(), d.text)
		return def
	}
	return got
}

// hostProblem says what is wrong with a hosts entry, or "".
func hostProblem(h string) string {
	name := h
	switch {
	case h == "":
		return `must not be empty ("*" matches any host)`
	case h == "*":
		return ""
	case strings.HasPrefix(h, "*."):
		name = h[2:]
	}
	if strings.Contains(name, "*") {
		return `the only wildcards are "*" alone and a leading "*." as in "*.example.com"`
	}
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") && net.ParseIP(name[1:len(name)-1]) != nil {
		return "" // an IPv6 literal, as it appears in a Host header
	}
	if strings.Contains(name, ":") {
		return "no port allowed: hosts match the Host header without its port"
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return "not a host name: empty label"
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
				return fmt.Sprintf("not a host name: %q is not allowed", r)
			}
		}
	}
	return ""
}

// stopSignals are the signals stop_signal may name, without "SIG".
var stopSignals = map[string]syscall.Signal{
	"TERM":  syscall.SIGTERM,
	"INT":   syscall.SIGINT,
	"QUIT":  syscall.SIGQUIT,
	"HUP":   syscall.SIGHUP,
	"USR1":  syscall.SIGUSR1,
	"USR2":  syscall.SIGUSR2,
	"KILL":  syscall.SIGKILL,
	"WINCH": syscall.SIGWINCH,
}

const signalNames = "SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL, SIGWINCH"

// parseSignal accepts "SIGTERM", "TERM", "sigterm", ... for the stopSignals.
func parseSignal(s string) (syscall.Signal, bool) {
	sig, ok := stopSignals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
	return sig, ok
}

// placeholderRE finds what looks like a placeholder: a lowercase name in
// braces. Upper-case names are not matched, so a shell's ${HOME} passes.
var placeholderRE = regexp.MustCompile(`\{[a-z][a-z0-9_]*\}`)

var knownPlaceholders = []string{"{app}", "{version}", "{socket}", "{port}", "{instance}"}

// placeholders reports unknown placeholders in command, dir and env, and an
// app that uses both {port} and {socket}.
func (l *loader) placeholders(a *AppConfig) {
	check := func(key toml.Key, s string) {
		for _, p := range placeholderRE.FindAllString(s, -1) {
			if !slices.Contains(knownPlaceholders, p) {
				l.addf(key, "%s: unknown placeholder %s in %q: want one of %s", key.String(), p, s, strings.Join(knownPlaceholders, " "))
			}
		}
	}
	for _, s := range a.Command {
		check(toml.Key{"apps", a.Name, "command"}, s)
	}
	check(toml.Key{"apps", a.Name, "dir"}, a.Dir)
	for _, k := range slices.Sorted(maps.Keys(a.Env)) {
		check(toml.Key{"apps", a.Name, "env", k}, a.Env[k])
	}
	usesSocket := slices.ContainsFunc(a.placeholderFields(), func(s string) bool {
		return strings.Contains(s, "{socket}")
	})
	if usesSocket && a.UsesPort() {
		l.addf(toml.Key{"apps", a.Name}, "app %q uses both {port} and {socket}: an app listens either on a TCP port or on a socket", a.Name)
	}
}

// socketPaths checks that every socket path of the app fits in sun_path
// (PITFALLS: 108 bytes with the NUL): the unique bind path of its configured
// version at its largest instance index, and its stable paths.
func (l *loader) socketPaths(a *AppConfig, stateDir string) {
	last := max(a.Instances, 1) - 1
	paths := []string{stableSocket(stateDir, a.Name, last)}
	if versionProblem(a.Version) == "" {
		paths = append(paths, uniqueSocket(stateDir, a.Name, a.Version, last))
	}
	longest := slices.MaxFunc(paths, func(x, y string) int { return cmp.Compare(len(x), len(y)) })
	if len(longest) > sockets.MaxPathLen {
		l.addf(toml.Key{"apps", a.Name}, "socket path %q of app %q is %d bytes (X stands for the random part), more than the %d a unix socket allows: use a shorter state_dir, app name or version",
			longest, a.Name, len(longest), sockets.MaxPathLen)
	}
}

// The socket layout, mirroring sockets.Layout (ControlSocket, Stable,
// UniqueLen) so that validation does not depend on it; keep them in step.
// The random part of a unique name is shown as X's.

func controlSocket(stateDir string) string { return filepath.Join(stateDir, "deployer.sock") }

func stableSocket(stateDir, app string, instance int) string {
	if instance == 0 {
		return filepath.Join(stateDir, app, "current.sock")
	}
	return filepath.Join(stateDir, app, fmt.Sprintf("current-%d.sock", instance))
}

func uniqueSocket(stateDir, app, version string, instance int) string {
	name := fmt.Sprintf("%s-%d-%s.sock", version, instance, strings.Repeat("X", sockets.UniqueSuffixLen))
	return filepath.Join(stateDir, app, name)
}

// routes reports two apps that claim the same host pattern and path prefix:
// the proxy could not tell which one a request is for. Hosts compare
// case-insensitively, paths without a trailing slash. order is the apps in
// file order, so the conflict is reported at the later one.
func (l *loader) routes(cfg *Config, order []string) {
	type route struct{ host, path string }
	owner := make(map[route]string)
	for _, name := range order {
		a := cfg.Apps[name]
		for _, h := range a.Hosts {
			r := route{strings.ToLower(h), strings.TrimSuffix(a.Path, "/")}
			if first, ok := owner[r]; ok && first != name {
				l.addf(toml.Key{"apps", name}, "apps %q and %q both serve host %q path %q", first, name, h, a.Path)
				continue
			}
			owner[r] = name
		}
	}
}

// keyLocator finds the line on which a key is defined.
//
// toml's parser records a position for every key, but MetaData does not
// export it: it surfaces only in the ParseError of a value whose
// Unmarshaler fails. So to locate apps.web.version the source is decoded
// again into a throwaway struct with nothing but the field path apps → web
// → version, whose leaf always fails; the ParseError then carries the
// parser's own position for exactly that key. This stays right where a text
// scan would have to understand multi-line strings and arrays, inline
// tables, dotted and quoted keys. Since toml falls back to a
// case-insensitive match, every case variant of a path element present in
// the file gets a field of its own that absorbs it, and the error's LastKey
// must name the key: anything else gives 0, never a wrong line.
type keyLocator struct {
	src   string
	keys  []toml.Key // every key of the document
	cache map[string]int
}

// locateProbe is the leaf of a locating decode: it fails wherever it is.
type locateProbe struct{}

var errLocated = errors.New("located")

func (locateProbe) UnmarshalTOML(any) error { return errLocated }

// line returns the 1-based line of key, or 0 when it cannot be found (an
// implicit table, a key inside an array of tables).
func (l *keyLocator) line(key toml.Key) int {
	s := key.String()
	if n, ok := l.cache[s]; ok {
		return n
	}
	n := l.find(key)
	if l.cache == nil {
		l.cache = make(map[string]int)
	}
	l.cache[s] = n
	return n
}

func (l *keyLocator) find(key toml.Key) int {
	t := reflect.TypeFor[locateProbe]()
	for i := len(key) - 1; i >= 0; i-- {
		tag, ok := fieldTag(key[i])
		if !ok {
			return 0
		}
		fields := []reflect.StructField{{Name: "Target", Type: t, Tag: tag}}
		for j, variant := range l.caseVariants(key[:i+1]) {
			tag, ok := fieldTag(variant)
			if !ok {
				return 0
			}
			fields = append(fields, reflect.StructField{
				Name: fmt.Sprintf("Variant%d", j),
				Type: reflect.TypeFor[toml.Primitive](),
				Tag:  tag,
			})
		}
		t = reflect.StructOf(fields)
	}
	_, err := toml.Decode(l.src, reflect.New(t).Interface())
	var pe toml.ParseError
	if !errors.As(err, &pe) || pe.Message != errLocated.Error() || pe.LastKey != key.String() ||
		pe.Position.Start < 0 || pe.Position.Start > len(l.src) {
		return 0
	}
	// Position.Line is where the lexer stood after the value, which for a
	// multi-line string is its last line; Start is where the value begins,
	// and TOML puts that on the line of its key.
	line := 1 + strings.Count(l.src[:pe.Position.Start], "\n")
	text := l.src[strings.LastIndexByte(l.src[:pe.Position.Start], '\n')+1:]
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	}
	if !strings.Contains(text, key[len(key)-1]) {
		return 0 // a quoted key with escapes, say: no line rather than a wrong one
	}
	return line
}

// caseVariants returns the last elements of the keys in the document that
// share key's parent and differ from its last element only in case.
func (l *keyLocator) caseVariants(key toml.Key) []string {
	parent, last := key[:len(key)-1], key[len(key)-1]
	var variants []string
	for _, k := range l.keys {
		if len(k) == len(key) && slices.Equal(k[:len(parent)], parent) &&
			k[len(k)-1] != last && strings.EqualFold(k[len(k)-1], last) &&
			!slices.Contains(variants, k[len(k)-1]) {
			variants = append(variants, k[len(k)-1])
		}
	}
	return variants
}

// fieldTag returns the struct tag that makes toml match exactly name. toml
// splits tags at commas and treats "" and "-" specially: such names cannot
// be expressed.
func fieldTag(name string) (reflect.StructTag, bool) {
	if name == "" || name == "-" || strings.Contains(name, ",") {
		return "", false
	}
	return reflect.StructTag("toml:" + strconv.Quote(name)), true
}
