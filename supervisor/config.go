package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
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
	DefaultSettle = 500 * time.Millisecond
	// Active health checks of serving instances (see AppConfig).
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultRise           = 2
	DefaultFall           = 3
	DefaultStopTimeout    = 10 * time.Second
	DefaultHealth         = "/healthz"
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
	Routes   RoutesConfig // [routes]: routes from Redis (redisroutes.go)

	src []byte // the file's contents as read: a daemon tells an edit since by it
}

// DeployerConfig is the [deployer] table.
type DeployerConfig struct {
	Listen       string // "" = no built-in proxy
	StateDir     string // absolute
	QueueTimeout time.Duration
	MaxQueued    int
	DrainTimeout time.Duration
	// PIDFile, if set (absolute), holds the daemon's pid, rewritten
	// atomically by every new daemon after an upgrade (systemd's PIDFile=).
	PIDFile string
	// Procs is how many threads run Go code at once (GOMAXPROCS):
	// ProcsAuto (the default: half the CPUs, all of them while an app
	// starts or the daemon is busy), 0 (every CPU, as the runtime
	// chooses), or that many (Procs).
	Procs int
	// Public is the public side: client limits, TLS, metrics, access log,
	// control socket access (config_public.go).
	Public PublicConfig
}

// Defaults of the [routes] table.
const (
	// DefaultRoutesResync is how often the whole Redis table is read again,
	// as a safety net for a missed notification.
	DefaultRoutesResync = 5 * time.Second
	// DefaultRoutesHealthInterval is how often each host:port and unix:
	// target of a Redis route gets a connect check.
	DefaultRoutesHealthInterval = 2 * time.Second
)

// RoutesConfig is the [routes] table: a routing table in Redis that several
// deployer proxies share. The zero value (no Redis) routes by deploy.toml
// alone.
type RoutesConfig struct {
	Redis string // redis://host:port/db URL; "" = no routes from Redis
	// KeyspaceEvents makes the daemon turn on keyspace notifications for
	// hashes (CONFIG SET notify-keyspace-events, adding K and h), so that a
	// plain `redis-cli HSET routes ...` takes effect at once.
	KeyspaceEvents bool
	Resync         time.Duration
	HealthInterval time.Duration
}

// AppConfig is one [apps.NAME] table, defaults filled in. Command, Dir and
// the Env values may hold placeholders (see Expand); they were checked to
// name only known ones, and never both {port} and {socket}.
type AppConfig struct {
	Name    string
	Command []string
	Version string
	Dir     string // may hold placeholders; relative to Config.Dir after expansion
	Env     map[string]string
	// EnvFiles are read at every launch of a process, in order, before Env
	// (envfile.go). Paths may hold {app} {version} {instance}; relative to
	// Config.Dir after expansion.
	EnvFiles     []string
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
	Settle time.Duration
	// Active health checks of a serving version's instances: every
	// HealthInterval a GET of Health, failing after HealthTimeout. Fall
	// failures in a row take an instance out of rotation (never the last
	// one in rotation), Rise passes in a row bring it back.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	Rise, Fall     int
	DrainTimeout   time.Duration
	StopSignal     syscall.Signal
	StopTimeout    time.Duration
	// MaxBody is the largest request body the proxy passes on, in bytes
	// (413 beyond it); 0 for no limit. Default: [deployer] max_body.
	MaxBody int64

	// envChanged marks the config of a version adopted from a daemon that
	// found its env different from deploy.toml's (the values themselves
	// are not kept in the state file): env stays pending.
	envChanged bool
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
func LoadConfig(path string) (*Config, error) { return loadConfig(path, false) }

// CheckConfig is LoadConfig for `deployer check`: it also loads tls_cert
// and tls_key as a key pair, as the daemon does when it starts, so that a
// key that does not match its certificate, or a file that is not PEM, is
// reported with the line of tls_cert instead of at the next start. The
// daemon's own loads (start, live reload) only check that the files exist:
// the certificate is its own watcher's business, and a reload must not be
// refused because a certificate rotation is half-written at that moment.
func CheckConfig(path string) (*Config, error) { return loadConfig(path, true) }

func loadConfig(path string, readFiles bool) (*Config, error) {
	src, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("supervisor: config file %s does not exist: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("supervisor: read config: %w", err)
	}
	return loadConfigSource(path, src, readFiles)
}

// loadConfigSource is LoadConfig of src, the contents read from path.
func loadConfigSource(path string, src []byte, readFiles bool) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("supervisor: config path %s: %w", path, err)
	}
	return parseConfig(path, abs, src, readFiles)
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
		Procs:        ProcsAuto,
	}
}

// defaultApp takes drain_timeout from [deployer].
func defaultApp(name string, d DeployerConfig) *AppConfig {
	return &AppConfig{
		Name:           name,
		Dir:            DefaultDir,
		Env:            map[string]string{},
		Hosts:          []string{"*"},
		Path:           DefaultPath,
		Health:         DefaultHealth,
		Instances:      DefaultInstances,
		ReadyTimeout:   DefaultReadyTimeout,
		Settle:         DefaultSettle,
		HealthInterval: DefaultHealthInterval,
		HealthTimeout:  DefaultHealthTimeout,
		Rise:           DefaultRise,
		Fall:           DefaultFall,
		DrainTimeout:   d.DrainTimeout,
		MaxBody:        d.Public.MaxBody,
		StopSignal:     DefaultStopSignal,
		StopTimeout:    DefaultStopTimeout,
	}
}

// PeekConfig reads only what a client needs to reach a running daemon (the
// state directory and the app names) from a deploy.toml that may be invalid
// otherwise: while the file on disk is broken, the daemon runs on its last
// valid config and `deployer status` must still reach it. It fails only when
// the file cannot be read or is not TOML at all.
func PeekConfig(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	// A generic tree, read by exact key as LoadConfig reads keys: a struct
	// would take "State_dir" for state_dir too, and either of the two when
	// both are there.
	var tree map[string]any
	if _, err := toml.DecodeFile(abs, &tree); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrConfig, err)
	}
	cfg := &Config{Path: abs, Dir: filepath.Dir(abs), Apps: make(map[string]*AppConfig)}
	cfg.Deployer.StateDir = DefaultStateDir
	deployer, _ := tree["deployer"].(map[string]any)
	if s, _ := deployer["state_dir"].(string); s != "" {
		cfg.Deployer.StateDir = s
	}
	if !filepath.IsAbs(cfg.Deployer.StateDir) {
		cfg.Deployer.StateDir = filepath.Join(cfg.Dir, cfg.Deployer.StateDir)
	}
	apps, _ := tree["apps"].(map[string]any)
	for name := range apps {
		cfg.Apps[name] = &AppConfig{Name: name}
	}
	return cfg, nil
}
