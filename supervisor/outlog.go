package supervisor

import (
	"bytes"
	"io"
	"os"
	"sync/atomic"
	"time"
)

const (
	// maxOutputFile bounds a process's output file: once the reader has
	// caught up past this size the file is truncated (copytruncate, as
	// logrotate calls it). Lines written between the last read and the
	// truncation are lost; with a reader that keeps up, that is nothing.
	maxOutputFile = 8 << 20
	// outputPoll is how often a reader at the end of a file looks again.
	outputPoll = 50 * time.Millisecond
	// maxLine splits longer lines, so one endless line cannot grow memory.
	maxLine = 64 << 10
)

// outputLog follows one process's output file into the app's LogBuffer until
// the process has exited and everything it wrote is read (then the file is
// removed), or until handOver (then the file stays for the next daemon,
// which reads on from Offset).
type outputLog struct {
	offset  atomic.Int64 // bytes of complete lines read so far
	stop    chan struct{}
	stopped chan struct{}
}

// followOutput reads p's output file from offset. Lines that end at or
// before shown (the previous daemon's hand-over point) are marked Backlog.
func followOutput(p *process, offset, shown int64, logs *LogBuffer) *outputLog {
	o := &outputLog{stop: make(chan struct{}), stopped: make(chan struct{})}
	o.offset.Store(offset)
	go o.run(p, shown, logs)
	return o
}

// Offset is where a next reader of the file should start: after the last
// complete line this one read.
func (o *outputLog) Offset() int64 { return o.offset.Load() }

// handOver stops reading without removing the file, and waits until the
// reader is done, so Offset is final.
func (o *outputLog) handOver() {
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	<-o.stopped
}

func (o *outputLog) run(p *process, shown int64, logs *LogBuffer) {
	defer close(o.stopped)
	path := p.spec.LogPath
	f, err := os.Open(path)
	if err != nil {
		close(p.outDone) // nothing to read
		return
	}
	defer f.Close()
	offset := o.offset.Load()
	if fi, err := f.Stat(); err == nil && offset > fi.Size() {
		offset, shown = 0, 0 // truncated meanwhile
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		offset, shown = 0, 0
	}
	// emit adds a line that ends (its newline included) at end.
	emit := func(line []byte, end int64) {
		logs.Add(LogLine{Time: time.Now(), Version: p.spec.Version, Instance: p.spec.Instance, Stream: "output", Text: string(line),
			Backlog: end <= shown})
	}
	var (
		buf     = make([]byte, 32<<10)
		partial []byte
		exiting bool
	)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			offset += int64(n)
			partial = append(partial, buf[:n]...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				line := partial[:i]
				partial = partial[i+1:]
				emit(line, offset-int64(len(partial)))
			}
			for len(partial) >= maxLine {
				line := partial[:maxLine]
				partial = partial[maxLine:]
				emit(line, offset-int64(len(partial)))
			}
			partial = append([]byte(nil), partial...)
			o.offset.Store(offset - int64(len(partial)))
			continue
		}
		if err != nil && err != io.EOF {
			return
		}
		// At the end of what was written so far.
		if exiting {
			if len(partial) > 0 {
				emit(partial, offset)
			}
			f.Close()
			os.Remove(path)
			close(p.outDone)
			return
		}
		if offset > maxOutputFile && len(partial) == 0 {
			if os.Truncate(path, 0) == nil {
				f.Seek(0, io.SeekStart)
				offset, shown = 0, 0
				o.offset.Store(0)
			}
		}
		select {
		case <-p.done:
			exiting = true // one more read for what it wrote last
		case <-o.stop:
			return // handed over: p.outDone stays open, the output is not done
		case <-time.After(outputPoll):
		}
	}
}
