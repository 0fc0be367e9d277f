package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// swapResult is the swap-cost and swap-latency measurement: a deployer run
// under the same load as the table's, with a swap every Every.
type swapResult struct {
	Every       string     `json:"every"`
	Swaps       int        `json:"swaps"`
	SwapsFailed int        `json:"swaps_failed"`
	SwapErrors  []string   `json:"swap_errors,omitempty"`
	SwapMs      stats      `json:"swap_command_ms"`
	Load        loadResult `json:"load"`
	// LatencyMs is, per swap, the time from the new version answering its
	// first health check to it receiving its first proxied request.
	LatencyMs stats `json:"latency_ms"`
}

// stats summarizes samples.
type stats struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Max    float64 `json:"max"`
}

func summarize(xs []float64) stats {
	if len(xs) == 0 {
		return stats{}
	}
	slices.Sort(xs)
	at := func(p float64) float64 { return xs[int(float64(len(xs)-1)*p)] }
	return stats{N: len(xs), Median: at(0.5), P90: at(0.9), Max: xs[len(xs)-1]}
}

// swapRun runs the load while swapping web to a new version every every,
// then reads the swap latencies the versions recorded in eventsDir.
func swapRun(ctx context.Context, d *daemon, l load, every time.Duration, eventsDir string, logf func(string, ...any)) (swapResult, error) {
	res := swapResult{Every: every.String()}
	loadDone := make(chan struct{})
	var lr loadResult
	var lerr error
	go func() {
		defer close(loadDone)
		lr, lerr = l.measure(ctx, d.addr, "bench.local", l.duration)
	}()

	var swapped []string
	var swapMs []float64
	next := time.Now().Add(every / 2)
	for n := 2; ; n++ {
		select {
		case <-loadDone:
		case <-time.After(time.Until(next)):
		}
		if isDone(loadDone) {
			break
		}
		version := "v" + strconv.Itoa(n)
		t0 := time.Now()
		out, err := d.cli(ctx, "swap", "web", version, "--json")
		took := time.Since(t0)
		res.Swaps++
		var r struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err == nil {
			err = decodeJSON(out, &r)
		}
		switch {
		case err != nil:
			res.SwapsFailed++
			res.SwapErrors = appendMax(res.SwapErrors, err.Error(), 5)
		case !r.OK:
			res.SwapsFailed++
			res.SwapErrors = appendMax(res.SwapErrors, r.Error, 5)
		default:
			swapped = append(swapped, version)
			swapMs = append(swapMs, float64(took.Microseconds())/1000)
		}
		next = t0.Add(every)
	}
	<-loadDone
	if lerr != nil {
		return res, lerr
	}
	res.Load = lr
	res.SwapMs = summarize(swapMs)
	logf("  %d swaps (%d failed), %d requests, %d failed", res.Swaps, res.SwapsFailed, lr.Requests, lr.Errors)

	var lat []float64
	for _, v := range swapped {
		if ms, ok := swapLatency(eventsDir, v); ok {
			lat = append(lat, ms)
		}
	}
	res.LatencyMs = summarize(lat)
	return res, nil
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func appendMax(list []string, s string, n int) []string {
	if len(list) < n {
		list = append(list, s)
	}
	return list
}

// decodeJSON decodes the JSON object the CLI printed for --json.
func decodeJSON(out []byte, v any) error {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return fmt.Errorf("no JSON object in %q", out)
	}
	return json.NewDecoder(bytes.NewReader(out[i:])).Decode(v)
}

// swapLatency reads what version's process recorded (see bench/backend):
// first request minus first health check answered, in ms.
func swapLatency(dir, version string) (float64, bool) {
	files, _ := filepath.Glob(filepath.Join(dir, version+"-*"))
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var healthy, first int64
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			what, ns, _ := strings.Cut(sc.Text(), " ")
			t, _ := strconv.ParseInt(ns, 10, 64)
			switch what {
			case "healthy":
				healthy = t
			case "first":
				first = t
			}
		}
		f.Close()
		if healthy > 0 && first > 0 {
			return float64(first-healthy) / 1e6, true
		}
	}
	return 0, false
}

// holdResult is the hold-cost measurement.
type holdResult struct {
	Held         int     `json:"held"`
	RSSBefore    int64   `json:"rss_before_bytes"`
	RSSDuring    int64   `json:"rss_during_bytes"`
	PerHeldBytes float64 `json:"rss_per_held_request_bytes"`
	// RSSAfter is read once every held request was answered, their
	// connections still open (idle keep-alive).
	RSSAfter int64 `json:"rss_after_resume_bytes"`
	// ResumeToLastMs runs from just before `deployer resume` is started
	// to the last held response read; ResumeCommandMs is how long the
	// resume command itself took.
	ResumeToLastMs  float64  `json:"resume_to_last_answer_ms"`
	ResumeCommandMs float64  `json:"resume_command_ms"`
	Answered200     int      `json:"answered_200"`
	Failed          int      `json:"failed"`
	FailedExamples  []string `json:"failed_examples,omitempty"`
}

// holdRun pauses web, holds n requests on n connections, measures the
// daemon's resident memory, resumes and times the release.
func holdRun(ctx context.Context, d *daemon, n int, logf func(string, ...any)) (holdResult, error) {
	res := holdResult{Held: n}
	pid := d.proc.pid()
	// Warm up: connections to the app pooled, buffers made.
	goLoad(ctx, d.addr, "bench.local", 64, time.Second, 5*time.Second)
	time.Sleep(time.Second)
	var err error
	if res.RSSBefore, err = rssBytes(pid); err != nil {
		return res, err
	}
	if _, err := d.cli(ctx, "pause", "web"); err != nil {
		return res, err
	}

	type outcome struct {
		status int
		err    error
		at     time.Time
	}
	outcomes := make([]outcome, n)
	conns := make([]net.Conn, n)
	var sent atomic.Int64
	var wg sync.WaitGroup
	dials := make(chan struct{}, 256) // connects at once: stay inside the listen backlog
	req := []byte("GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n")
	for i := range n {
		wg.Go(func() {
			dials <- struct{}{}
			conn, err := net.DialTimeout("tcp", d.addr, 10*time.Second)
			if err == nil {
				_, err = conn.Write(req)
			}
			<-dials
			if err != nil {
				outcomes[i] = outcome{err: err, at: time.Now()}
				return
			}
			conns[i] = conn
			sent.Add(1)
			conn.SetDeadline(time.Now().Add(120 * time.Second))
			status, err := newResponseReader(conn).read()
			outcomes[i] = outcome{status: status, err: err, at: time.Now()}
		})
	}
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	defer closeAll()

	// Wait until the daemon holds them all.
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := d.status(ctx)
		if err != nil {
			return res, err
		}
		if s.Held >= n {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d requests held after 60s (%d sent)", s.Held, n, sent.Load())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if res.RSSDuring, err = rssBytes(pid); err != nil {
		return res, err
	}
	res.PerHeldBytes = float64(res.RSSDuring-res.RSSBefore) / float64(n)
	logf("  %d held: RSS %.1f MiB → %.1f MiB (%.1f KiB per held request)", n, mib(res.RSSBefore), mib(res.RSSDuring), res.PerHeldBytes/1024)

	t0 := time.Now()
	if _, err := d.cli(ctx, "resume", "web"); err != nil {
		return res, err
	}
	res.ResumeCommandMs = float64(time.Since(t0).Microseconds()) / 1000
	wg.Wait()
	var last time.Time
	for _, o := range outcomes {
		if o.err == nil && o.status == 200 {
			res.Answered200++
		} else {
			res.Failed++
			msg := fmt.Sprintf("status %d", o.status)
			if o.err != nil {
				msg = o.err.Error()
			}
			res.FailedExamples = appendMax(res.FailedExamples, msg, 5)
		}
		if o.at.After(last) {
			last = o.at
		}
	}
	res.ResumeToLastMs = float64(last.Sub(t0).Microseconds()) / 1000
	if res.RSSAfter, err = rssBytes(pid); err != nil {
		return res, err
	}

	closeAll()
	if res.Failed > 0 && res.Answered200 == 0 {
		return res, errors.New("no held request was answered 200: " + strings.Join(res.FailedExamples, "; "))
	}
	return res, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
