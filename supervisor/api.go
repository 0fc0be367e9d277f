package supervisor

import "time"

// The control API: HTTP+JSON on <state_dir>/deployer.sock, so that both the
// deployer CLI and `curl --unix-socket run/deployer.sock http://deployer/v1/status`
// work. Every error answer is a non-2xx status with an APIError body.
//
//	GET  /v1/status[?app=APP]           -> Status
//	POST /v1/apps/{app}/swap            {"version":"v2"} -> NDJSON stream of Event, the last one of type "result"
//	POST /v1/apps/{app}/rollback        -> same stream
//	POST /v1/apps/{app}/restart         -> same stream
//	POST /v1/apps/{app}/start           -> same stream
//	POST /v1/apps/{app}/stop            -> same stream
//	POST /v1/apps/{app}/pause           -> Status of that app
//	POST /v1/apps/{app}/resume          -> Status of that app
//	GET  /v1/apps/{app}/logs?n=200&follow=1 -> text/plain, one line each, follows while follow=1
//	POST /v1/upgrade                    -> UpgradeResult (upgrade.go); ok=false: the old daemon serves on
//	POST /v1/shutdown                   -> {} then the daemon stops gracefully
//	GET  /v1/routes                     -> RoutesStatus (redisroutes.go); 404 without [routes] redis

// APIError is the body of every non-2xx control answer.
type APIError struct {
	Error string `json:"error"`
	// Code is a stable machine-readable reason: "unknown_app", "bad_request",
	// "swap_running", "no_previous", "not_serving", "internal" (apiStatus).
	Code string `json:"code"`
}

// SwapRequest is the body of swap (and of start/restart/rollback, where
// Version may be empty).
type SwapRequest struct {
	Version   string `json:"version,omitempty"`
	WaitDrain bool   `json:"wait_drain,omitempty"`
}

// Event is one line of a streamed operation.
type Event struct {
	Type    string    `json:"type"` // "progress" or "result"
	Time    time.Time `json:"time"`
	Message string    `json:"message,omitempty"`
	Result  *Result   `json:"result,omitempty"`
}

// Result ends every streamed operation.
type Result struct {
	OK          bool     `json:"ok"`
	App         string   `json:"app"`
	Op          string   `json:"op"` // swap, rollback, restart, start, stop
	OldVersion  string   `json:"old_version,omitempty"`
	NewVersion  string   `json:"new_version,omitempty"`
	Error       string   `json:"error,omitempty"`
	Output      []string `json:"output,omitempty"` // the new version's last lines, on failure
	DurationMS  int64    `json:"duration_ms"`
	ReadyMS     int64    `json:"ready_ms,omitempty"`     // launch → healthy
	DrainMS     int64    `json:"drain_ms,omitempty"`     // with wait_drain: swap → old version gone
	CutRequests int      `json:"cut_requests,omitempty"` // with wait_drain: cut at drain_timeout
}

// Status is what `deployer status --json` prints.
type Status struct {
	Apps []AppStatus `json:"apps"`
	Load LoadStatus  `json:"load"`
	// ConfigError is set while deploy.toml on disk is invalid: the daemon
	// runs on the last valid config.
	ConfigError string `json:"config_error,omitempty"`
	// Daemon is the process answering: its pid changes with every upgrade.
	Daemon DaemonStatus `json:"daemon"`
	// Routes reports the routes from Redis, when [routes] redis is set.
	Routes *RoutesStatus `json:"routes,omitempty"`
}

type DaemonStatus struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Binary  string    `json:"binary"`
}

type AppStatus struct {
	Name      string           `json:"name"`
	Version   string           `json:"version"`  // serving version, "" if none
	Previous  string           `json:"previous"` // what rollback goes back to
	State     string           `json:"state"`    // starting serving paused draining stopped failed
	Instances []InstanceStatus `json:"instances"`
	InFlight  int              `json:"in_flight"`
	Held      int              `json:"held"`
	Versions  []VersionStatus  `json:"versions"`
	LastError string           `json:"last_error,omitempty"`
	// Pending lists process settings (command, env, dir, instances, stop
	// settings) changed in deploy.toml since the serving version was
	// launched: they take effect at the next swap or restart.
	Pending []string `json:"pending,omitempty"`
}

type InstanceStatus struct {
	Instance int     `json:"instance"`
	PID      int     `json:"pid"`
	Socket   string  `json:"socket"`
	Version  string  `json:"version"`
	Healthy  bool    `json:"healthy"` // in rotation: passing health checks, process up
	Restarts int     `json:"restarts"`
	CPU      float64 `json:"cpu_percent"`
	RSS      int64   `json:"rss_bytes"`
}

type VersionStatus struct {
	Version  string `json:"version"`
	State    string `json:"state"`
	InFlight int    `json:"in_flight"`
}

type LoadStatus struct {
	Load1  float64 `json:"load1"`
	Load5  float64 `json:"load5"`
	Load15 float64 `json:"load15"`
}

// App and version states.
const (
	StateStarting = "starting"
	StateServing  = "serving"
	StatePaused   = "paused"
	StateDraining = "draining"
	StateStopped  = "stopped"
	StateFailed   = "failed"
)
