package supervisor

import (
	"syscall"
	"time"
)

// Defaults applied by LoadConfig to keys left out.
const (
	DefaultListen       = "127.0.0.1:8080"
	DefaultStateDir     = "run"
	DefaultQueueTimeout = 30 * time.Second
	DefaultMaxQueued    = 10000
	DefaultDrainTimeout = 30 * time.Second
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopTimeout  = 10 * time.Second
	DefaultHealth       = "/healthz"
)

// Config is a validated deploy.toml. All paths are absolute.
type Config struct {
	Path     string // the file it was read from, absolute
	Dir      string // its directory: relative paths are relative to it
	Deployer DeployerConfig
	Apps     map[string]*AppConfig
}

type DeployerConfig struct {
	Listen       string // "" = no built-in proxy
	StateDir     string // absolute
	QueueTimeout time.Duration
	MaxQueued    int
	DrainTimeout time.Duration
}

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
	DrainTimeout time.Duration
	StopSignal   syscall.Signal
	StopTimeout  time.Duration
}

// AppNames returns the app names, sorted.
func (c *Config) AppNames() []string { panic("todo") }

// UsesPort reports whether the app listens on TCP ({port} in its command, dir or env).
func (a *AppConfig) UsesPort() bool { panic("todo") }

// LoadConfig reads, strictly decodes and validates the deploy.toml at path.
// Errors name file:line where known; several problems are joined.
func LoadConfig(path string) (*Config, error) { panic("todo") }

// Vars fill the placeholders {app} {version} {socket} {port} {instance}.
type Vars struct {
	App, Version, Socket string
	Port, Instance       int
}

// Expand replaces the placeholders in s.
func Expand(s string, v Vars) string { panic("todo") }

// ValidVersion reports whether v can name a version: it ends up in file names.
func ValidVersion(v string) error { panic("todo") }
