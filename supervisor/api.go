package supervisor

import (
	"fmt"
	"time"
)

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
//	GET  /v1/apps/{app}/logs?n=200&follow=1 -> text/plain, one line each, follows while follow=1;
//	     trailer Deployer-Logs-End: handover when the daemon handed over;
//	     &after=handover leaves out what the daemon before this one showed
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
	// Timeout bounds a swap, rollback or restart, counted from the
	// request's arrival: a duration such as "90s". If it passes before new
	// traffic moved, the new version is killed and the old one serves on,
	// untouched; after, the operation stops waiting (for the drain). Either
	// way the result's outcome is "timeout". "" bounds nothing beyond
	// ready_timeout (and drain_timeout with wait_drain). It travels in the
	// request, not as the connection's lifetime, because an operation runs
	// on even when its client goes away (Daemon.stream).
	Timeout string `json:"timeout,omitempty"`
}

// timeout returns the parsed Timeout, 0 when there is none.
func (r SwapRequest) timeout() (time.Duration, error) {
	if r.Timeout == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(r.Timeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("timeout %q is not a positive duration such as \"90s\"", r.Timeout)
	}
	return d, nil
}

// Event is one line of a streamed operation.
type Event struct {
	Type    string    `json:"type"` // "progress" or "result"
	Time    time.Time `json:"time"`
	Message string    `json:"message,omitempty"`
	Result  *Result   `json:"result,omitempty"`
}

// Outcomes of a streamed operation (Result.Outcome).
const (
	OutcomeOK      = "ok"
	OutcomeFailed  = "failed"
	OutcomeTimeout = "timeout" // SwapRequest.Timeout passed
	// OutcomeUnknown is never sent by the daemon: the CLI reports it when
	// the daemon's result did not reach it (the connection was lost, or
	// nothing came long after --timeout).
	OutcomeUnknown = "unknown"
)

// Result ends every streamed operation.
type Result struct {
	OK          bool     `json:"ok"`
	Outcome     string   `json:"outcome"` // OutcomeOK, OutcomeFailed or OutcomeTimeout
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
	// TrafficMoved says whether new traffic went to NewVersion. False on a
	// failure or a timeout before the switch: the old version served on.
	TrafficMoved bool  `json:"traffic_moved"`
	SwitchMS     int64 `json:"switch_ms,omitempty"`  // launch → new traffic on NewVersion
	TimeoutMS    int64 `json:"timeout_ms,omitempty"` // the request's timeout, if it had one
}

// setOutcome fills in Outcome from OK where the operation left it empty.
func (r *Result) setOutcome() {
	switch {
	case r.Outcome != "":
	case r.OK:
		r.Outcome = OutcomeOK
	default:
		r.Outcome = OutcomeFailed
	}
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
	// Build is the running daemon's; BinaryBuild that of the binary now at
	// Binary, when it is provably another build (what `deployer upgrade`
	// would switch to), else nil.
	Build       Build  `json:"build,omitzero"`
	BinaryBuild *Build `json:"binary_build,omitempty"`
	// Goroutines and OpenFDs are the daemon's own counts when it answered:
	// a number that keeps growing while the load does not is a leak.
	Goroutines int `json:"goroutines"`
	OpenFDs    int `json:"open_fds"` // -1 where /proc/self/fd cannot be read
	// Procs is how many threads may run its Go code at once now
	// (GOMAXPROCS, deploy.toml's procs), of the CPUs it may use.
	Procs int `json:"procs"`
	CPUs  int `json:"cpus"`
	// ProcsSource says where Procs comes from: "auto" (it moves between
	// ProcsMin and ProcsMax), "all", "config" or "env" (ProcsPlan).
	ProcsSource string `json:"procs_source,omitempty"`
	ProcsMin    int    `json:"procs_min,omitempty"`
	ProcsMax    int    `json:"procs_max,omitempty"`
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
	Instance int    `json:"instance"`
	PID      int    `json:"pid"`
	Socket   string `json:"socket"`
	Version  string `json:"version"`
	// Healthy: in rotation and passing its health checks. InRotation
	// alone stays true for the last instance in rotation when its checks
	// fail (it is never taken out for that alone); HealthError then says
	// why it is not healthy.
	Healthy     bool    `json:"healthy"`
	InRotation  bool    `json:"in_rotation"`
	HealthError string  `json:"health_error,omitempty"`
	Restarts    int     `json:"restarts"`
	CPU         float64 `json:"cpu_percent"`
	RSS         int64   `json:"rss_bytes"`
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
