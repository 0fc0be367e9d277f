package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/deployer/deployer/proxy"
)

// Timing and sizes of the access log's writer.
const (
	// accessLogFlushEvery bounds how long a line waits in memory.
	accessLogFlushEvery = 100 * time.Millisecond
	// accessLogReopenEvery is how often the file's path is checked: once
	// logrotate has renamed or removed it, the next check opens a new file.
	accessLogReopenEvery = time.Second
	// accessLogFlushAt wakes the writer before the next tick.
	accessLogFlushAt = 64 << 10
	// accessLogMaxBuffered caps the memory held for a writer that is behind
	// (a stalled disk, a full pipe): further lines are dropped and counted
	// rather than making requests wait.
	accessLogMaxBuffered = 8 << 20
	// pipeBuf is PIPE_BUF on Linux: a write to a pipe up to this size is not
	// interleaved with other writers' (journald reads stdout and stderr
	// through pipes). Writes to stdout and stderr are cut at line ends
	// within it.
	pipeBuf = 4096
)

// accessLog writes one JSON line per request ([deployer] access_log), in
// the layout of log/slog's JSONHandler:
//
//	{"time":"…","level":"INFO","msg":"request","app":"web","version":"v42",
//	 "method":"GET","host":"example.com","path":"/","status":200,
//	 "duration_ms":1.234,"bytes":512,"request_id":"…","remote":"10.0.0.1:5555"}
//
// plus "held_ms" when the request waited at the gate. time is when the
// response ended. The line is encoded here, straight into the writer's
// buffer, not by a slog.Handler: the same bytes (accesslog_test.go checks
// them against JSONHandler's) for a fifth of the CPU and no allocation.
// Lines go through a buffer flushed every 100 ms and at stop, so a request
// costs no write system call.
type accessLog struct {
	w *logWriter
}

// newAccessLog prepares the access log for target ("stdout", "stderr" or an
// absolute path); errors writing it are logged to errs. Lines written
// before open wait in the buffer.
func newAccessLog(target string, errs *slog.Logger) *accessLog {
	return &accessLog{w: newLogWriter(target, errs, accessLogFlushEvery, accessLogReopenEvery)}
}

func (l *accessLog) open() error { return l.w.open() }

// close writes what is buffered and closes the file; later lines are
// dropped.
func (l *accessLog) close() { l.w.close() }

// request logs one request; version is the version's name.
func (l *accessLog) request(info *proxy.RequestInfo, version string) {
	now := time.Now()
	l.w.add(func(b []byte) []byte { return appendAccessLine(b, now, info, version) })
}

// appendAccessLine appends info's line, as slog's JSONHandler would write
// it, to b.
func appendAccessLine(b []byte, t time.Time, info *proxy.RequestInfo, version string) []byte {
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request","app":`...)
	b = appendJSONString(b, info.App)
	b = append(b, `,"version":`...)
	b = appendJSONString(b, version)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, info.Method)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, info.Host)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, info.Path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(info.Status), 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, info.Duration)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, info.Bytes, 10)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, info.RequestID)
	b = append(b, `,"remote":`...)
	b = appendJSONString(b, info.Remote)
	if info.Held > 0 {
		b = append(b, `,"held_ms":`...)
		b = appendMillis(b, info.Held)
	}
	return append(b, "}\n"...)
}

// appendMillis appends d in milliseconds to the microsecond, as
// encoding/json writes that float (plain decimal in this range).
func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
}

// appendJSONString appends s quoted as slog's JSONHandler quotes strings:
// ", \ and control bytes escaped, invalid UTF-8 as \ufffd, U+2028 and
// U+2029 escaped, no HTML escaping. Client-sent hosts and paths can hold
// any byte: a line is always one valid JSON object.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// logWriter is a buffered, mutex-guarded writer of whole lines to stdout,
// stderr or a file. Write only appends to memory; one goroutine (loop) does
// every write to the output, every flushEvery, sooner when the buffer
// passes accessLogFlushAt, and at close. A file is opened
// O_APPEND|O_CREATE, mode 0640, its directory created; it is opened again
// when its path no longer names it (logrotate renamed or removed it).
// copytruncate works too: with O_APPEND every write goes to the current end.
type logWriter struct {
	target                  string
	log                     *slog.Logger
	flushEvery, reopenEvery time.Duration

	mu      sync.Mutex
	buf     []byte
	dropped int
	closed  bool
	started bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	// Owned by loop (and by open before loop starts).
	out     *os.File
	fi      os.FileInfo // out's, when out is the file at target
	pipe    bool        // out is not a regular file
	spare   []byte
	idle    int // flushes in a row that used little of the buffer
	lastErr time.Time
}

func newLogWriter(target string, log *slog.Logger, flushEvery, reopenEvery time.Duration) *logWriter {
	return &logWriter{
		target: target, log: log, flushEvery: flushEvery, reopenEvery: reopenEvery,
		buf: make([]byte, 0, 2*accessLogFlushAt), spare: make([]byte, 0, 2*accessLogFlushAt),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

func (w *logWriter) isFile() bool { return w.target != "stdout" && w.target != "stderr" }

// open opens the output and starts writing.
func (w *logWriter) open() error {
	switch w.target {
	case "stdout":
		w.out = os.Stdout
	case "stderr":
		w.out = os.Stderr
	default:
		f, fi, err := openLogFile(w.target)
		if err != nil {
			return err
		}
		w.out, w.fi = f, fi
	}
	if fi, err := w.out.Stat(); err == nil && !fi.Mode().IsRegular() {
		w.pipe = true
	}
	w.mu.Lock()
	w.started = true
	w.mu.Unlock()
	go w.loop()
	return nil
}

func openLogFile(path string) (*os.File, os.FileInfo, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, fmt.Errorf("supervisor: access log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("supervisor: access log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("supervisor: access log: %w", err)
	}
	return f, fi, nil
}

// add appends one whole line, encoded by line straight into the buffer.
// Past accessLogMaxBuffered the line is counted as dropped instead.
func (w *logWriter) add(line func([]byte) []byte) {
	w.mu.Lock()
	switch {
	case w.closed:
	case len(w.buf) >= accessLogMaxBuffered:
		w.dropped++
	default:
		w.buf = line(w.buf)
		if len(w.buf) >= accessLogFlushAt {
			select {
			case w.kick <- struct{}{}:
			default:
			}
		}
	}
	w.mu.Unlock()
}

// Write buffers p, whole lines. It never fails.
func (w *logWriter) Write(p []byte) (int, error) {
	w.add(func(b []byte) []byte { return append(b, p...) })
	return len(p), nil
}

// close flushes, stops the writer and closes a file.
func (w *logWriter) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	started := w.started
	w.mu.Unlock()
	if !started {
		return
	}
	close(w.stop)
	<-w.done
	if w.isFile() {
		w.out.Close()
	}
}

func (w *logWriter) loop() {
	defer close(w.done)
	tick := time.NewTicker(w.flushEvery)
	defer tick.Stop()
	checked := time.Now()
	for {
		select {
		case <-tick.C:
		case <-w.kick:
		case <-w.stop:
			w.flush()
			return
		}
		w.flush()
		if w.isFile() && time.Since(checked) >= w.reopenEvery {
			checked = time.Now()
			w.reopenIfMoved()
		}
	}
}

// flush writes out what is buffered.
func (w *logWriter) flush() {
	w.mu.Lock()
	b, dropped := w.buf, w.dropped
	w.buf, w.dropped = w.spare[:0], 0
	w.mu.Unlock()
	if len(b) > 0 {
		if err := w.writeOut(b); err != nil {
			w.report("access log: write failed; lines lost", err)
		}
	}
	if dropped > 0 {
		w.log.Warn("access log: lines dropped, the writer is behind", "path", w.target, "dropped", dropped)
	}
	// A buffer grown in a burst goes after 50 flushes (5 s) that used
	// little of it; under sustained load it is kept, not grown again on
	// every flush.
	if len(b) < cap(b)/8 {
		w.idle++
	} else {
		w.idle = 0
	}
	if w.idle >= 50 && cap(b) > 2*accessLogFlushAt {
		b, w.idle = nil, 0
	}
	w.spare = b[:0]
}

// writeOut writes b, whole lines; to a pipe in pieces of at most pipeBuf
// bytes that end lines, so no other writer's bytes land inside a line.
func (w *logWriter) writeOut(b []byte) error {
	for len(b) > 0 {
		n := len(b)
		if w.pipe {
			n = pipeChunk(b)
		}
		if _, err := w.out.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// pipeChunk is the length of b's first piece for a pipe: all of it up to
// pipeBuf bytes, else up to its last line end within pipeBuf, else its first
// line, whole.
func pipeChunk(b []byte) int {
	if len(b) <= pipeBuf {
		return len(b)
	}
	if i := bytes.LastIndexByte(b[:pipeBuf], '\n'); i >= 0 {
		return i + 1
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return i + 1
	}
	return len(b)
}

// reopenIfMoved opens the file at target again when the path names another
// file or none (logrotate's rename, or a removal). Lines flushed before
// went to the old file, as logrotate expects.
func (w *logWriter) reopenIfMoved() {
	fi, err := os.Stat(w.target)
	if err == nil && os.SameFile(fi, w.fi) {
		return
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return // cannot tell: write on where we write
	}
	f, nfi, err := openLogFile(w.target)
	if err != nil {
		w.report("access log: reopening failed; writing on to the old file", err)
		return
	}
	w.out.Close()
	w.out, w.fi = f, nfi
	w.log.Info("access log reopened", "path", w.target)
}

// report logs an error of the writer, at most once a minute.
func (w *logWriter) report(msg string, err error) {
	if time.Since(w.lastErr) < time.Minute {
		return
	}
	w.lastErr = time.Now()
	w.log.Error(msg, "path", w.target, "error", err)
}
