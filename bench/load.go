package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// load is the workload every target gets: the same number of keep-alive
// connections, each sending GET / as fast as answers come back, for the same
// time, after the same warm-up.
type load struct {
	threads     int
	connections int
	duration    time.Duration
	warmup      time.Duration
	timeout     time.Duration // a request slower than this counts as an error
	tool        string        // "wrk" or "go"
	dir         string        // for wrk's script
}

// loadResult is what one run measured.
type loadResult struct {
	Tool     string  `json:"tool"`
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"requests_per_second"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p99_9_us"`
	MaxUs    float64 `json:"max_us"`
	// Errors counts failed requests: connect, read and write errors,
	// timeouts, and answers other than 2xx/3xx.
	Errors     int64 `json:"errors"`
	ErrConnect int64 `json:"errors_connect"`
	ErrRead    int64 `json:"errors_read"`
	ErrWrite   int64 `json:"errors_write"`
	ErrTimeout int64 `json:"errors_timeout"`
	ErrStatus  int64 `json:"errors_status"`
}

func (r *loadResult) finish() {
	r.Errors = r.ErrConnect + r.ErrRead + r.ErrWrite + r.ErrTimeout + r.ErrStatus
	if r.Seconds > 0 {
		r.RPS = float64(r.Requests) / r.Seconds
	}
}

// run warms addr up, then measures it.
func (l load) run(ctx context.Context, addr, host string) (loadResult, error) {
	if l.warmup > 0 {
		if _, err := l.measure(ctx, addr, host, l.warmup); err != nil {
			return loadResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	return l.measure(ctx, addr, host, l.duration)
}

func (l load) measure(ctx context.Context, addr, host string, d time.Duration) (loadResult, error) {
	if l.tool == "wrk" {
		return l.wrk(ctx, addr, host, d)
	}
	return goLoad(ctx, addr, host, l.connections, d, l.timeout), nil
}

// wrkScript prints wrk's summary as one JSON line.
const wrkScript = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
`

func (l load) wrk(ctx context.Context, addr, host string, d time.Duration) (loadResult, error) {
	script := filepath.Join(l.dir, "report.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return loadResult{}, err
	}
	secs := max(1, int(d.Round(time.Second).Seconds()))
	args := []string{
		"-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.connections),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", fmt.Sprintf("%ds", max(1, int(l.timeout.Round(time.Second).Seconds()))),
		"--latency", "-s", script,
	}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	args = append(args, "http://"+addr+"/")
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	_, js, ok := strings.Cut(string(out), "BENCHJSON ")
	if !ok {
		return loadResult{}, fmt.Errorf("wrk printed no summary:\n%s", out)
	}
	js, _, _ = strings.Cut(js, "\n")
	var s struct {
		Requests   int64   `json:"requests"`
		DurationUs int64   `json:"duration_us"`
		Connect    int64   `json:"connect"`
		Read       int64   `json:"read"`
		Write      int64   `json:"write"`
		Status     int64   `json:"status"`
		Timeout    int64   `json:"timeout"`
		P50        float64 `json:"p50"`
		P99        float64 `json:"p99"`
		P999       float64 `json:"p999"`
		Max        float64 `json:"max"`
	}
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return loadResult{}, fmt.Errorf("wrk summary %q: %v", js, err)
	}
	r := loadResult{
		Tool: "wrk", Requests: s.Requests, Seconds: float64(s.DurationUs) / 1e6,
		P50us: s.P50, P99us: s.P99, P999us: s.P999, MaxUs: s.Max,
		ErrConnect: s.Connect, ErrRead: s.Read, ErrWrite: s.Write, ErrTimeout: s.Timeout, ErrStatus: s.Status,
	}
	r.finish()
	return r, nil
}

// goLoad is the built-in load generator, for machines without wrk: conns
// keep-alive connections, each sending the next request when the previous
// answer is read, for d.
func goLoad(ctx context.Context, addr, host string, conns int, d, timeout time.Duration) loadResult {
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	start := time.Now()
	end := start.Add(d)
	var mu sync.Mutex
	total := loadResult{Tool: "go"}
	var all []int32
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			var r loadResult
			lat := make([]int32, 0, 4096)
			var conn net.Conn
			var rr *responseReader
			for time.Now().Before(end) && ctx.Err() == nil {
				if conn == nil {
					c, err := net.DialTimeout("tcp", addr, timeout)
					if err != nil {
						r.ErrConnect++
						time.Sleep(10 * time.Millisecond)
						continue
					}
					conn, rr = c, newResponseReader(c)
				}
				t0 := time.Now()
				conn.SetDeadline(t0.Add(timeout))
				if _, err := conn.Write(req); err != nil {
					r.ErrWrite++
					conn.Close()
					conn = nil
					continue
				}
				status, err := rr.read()
				if err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						r.ErrTimeout++
					} else {
						r.ErrRead++
					}
					conn.Close()
					conn = nil
					continue
				}
				us := time.Since(t0).Microseconds()
				lat = append(lat, int32(min(us, 1<<31-1)))
				r.Requests++
				if status >= 400 {
					r.ErrStatus++
				}
				if rr.close {
					conn.Close()
					conn = nil
				}
			}
			if conn != nil {
				conn.Close()
			}
			mu.Lock()
			total.Requests += r.Requests
			total.ErrConnect += r.ErrConnect
			total.ErrRead += r.ErrRead
			total.ErrWrite += r.ErrWrite
			total.ErrTimeout += r.ErrTimeout
			total.ErrStatus += r.ErrStatus
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	total.Seconds = time.Since(start).Seconds()
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(float64(len(all)-1) * p / 100)
		return float64(all[i])
	}
	total.P50us, total.P99us, total.P999us = pct(50), pct(99), pct(99.9)
	if len(all) > 0 {
		total.MaxUs = float64(all[len(all)-1])
	}
	total.finish()
	return total
}

// responseReader reads HTTP/1.1 responses from a connection: the status,
// and the body (Content-Length, chunked, or until close), discarded.
type responseReader struct {
	br    *bufio.Reader
	close bool // the last response ended the connection
}

func newResponseReader(r io.Reader) *responseReader {
	return &responseReader{br: bufio.NewReaderSize(r, 16<<10)}
}

func (rr *responseReader) read() (status int, err error) {
	line, err := rr.br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length := int64(-1)
	chunked := false
	rr.close = false
	for {
		line, err := rr.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, err = strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			rr.close = bytes.EqualFold(v, []byte("close"))
		}
	}
	switch {
	case status < 200 || status == 204 || status == 304:
	case chunked:
		if _, err := io.Copy(io.Discard, httputil.NewChunkedReader(rr.br)); err != nil {
			return 0, err
		}
		for { // trailers
			line, err := rr.br.ReadSlice('\n')
			if err != nil {
				return 0, err
			}
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				break
			}
		}
	case length >= 0:
		if _, err := rr.br.Discard(int(length)); err != nil {
			return 0, err
		}
	default:
		rr.close = true
		if _, err := io.Copy(io.Discard, rr.br); err != nil {
			return 0, err
		}
	}
	return status, nil
}
