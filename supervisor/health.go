package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/deployer/deployer/sockets"
)

// healthTimeout bounds one health check when the caller gives no timeout.
const healthTimeout = DefaultHealthTimeout

// endpoint is where one app process listens.
type endpoint struct {
	network string // "unix" or "tcp"
	addr    string
}

// checkHealth makes one health check: a GET of path answered 2xx, or, when
// path is "", a successful connect. Keep-alives are off: a pooled health
// connection would count as a live connection to an old version and hold up
// its drain (see drain's /proc/net/unix wait). timeout bounds the check
// (health_timeout; 0: healthTimeout).
func checkHealth(ctx context.Context, ep endpoint, path string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = healthTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	if path == "" {
		c, err := d.DialContext(ctx, ep.network, ep.addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, ep.network, ep.addr)
		},
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "deployer-health")
	res, err := tr.RoundTrip(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return fmt.Errorf("GET %s: no answer within %s (health_timeout): %w", path, timeout, context.DeadlineExceeded)
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("GET %s answered %s", path, res.Status)
	}
	return nil
}

// errExited is returned by waitReady when the process died first.
var errExited = errors.New("process exited")

// waitReady waits until p listens and passes its health check, then until it
// has stayed up and healthy for settle. It fails fast when p exits.
func waitReady(ctx context.Context, p *process, ep endpoint, health string, timeout, settle time.Duration) error {
	if p.launched != nil {
		defer p.launched()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	exited := func(err error) error {
		if p.exited() {
			return fmt.Errorf("%w: %s", errExited, p.exitDescription())
		}
		return err
	}

	if ep.network == "unix" {
		// fsnotify on the directory, not polling (sockets.WaitForSocket).
		if err := sockets.WaitForSocket(ctx, ep.addr); err != nil {
			return exited(fmt.Errorf("socket %s did not appear: %w", ep.addr, err))
		}
	}
	noCheck := errors.New("no health check made")
	lastErr := noCheck
	interval := 25 * time.Millisecond
	var healthySince time.Time
	for {
		err := checkHealth(ctx, ep, health, timeout)
		if p.exited() {
			return exited(err)
		}
		switch {
		case ctx.Err() != nil:
			// The deadline cut this check short, which says nothing about
			// the app: an earlier check's answer stays the one reported.
			if lastErr == noCheck && healthySince.IsZero() {
				lastErr = err
			}
		case err == nil && healthySince.IsZero():
			healthySince = time.Now()
			interval = 100 * time.Millisecond
		case err != nil:
			lastErr = err
			healthySince = time.Time{}
		}
		if !healthySince.IsZero() && time.Since(healthySince) >= settle {
			return nil
		}
		select {
		case <-ctx.Done():
			if p.exited() {
				return exited(nil)
			}
			if !healthySince.IsZero() {
				// Passing, but not for long enough: lastErr, if any, is
				// from before and not the reason.
				return fmt.Errorf("healthy for %s, less than settle (%s)", time.Since(healthySince).Round(time.Millisecond), settle)
			}
			return fmt.Errorf("last health check: %v", lastErr)
		case <-time.After(interval):
		}
		if healthySince.IsZero() && interval < 500*time.Millisecond {
			interval = interval * 3 / 2
		}
	}
}
