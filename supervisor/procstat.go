package supervisor

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// readLoad reads the host's load averages from /proc/loadavg.
func readLoad() LoadStatus {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return LoadStatus{}
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return LoadStatus{}
	}
	var ls LoadStatus
	ls.Load1, _ = strconv.ParseFloat(f[0], 64)
	ls.Load5, _ = strconv.ParseFloat(f[1], 64)
	ls.Load15, _ = strconv.ParseFloat(f[2], 64)
	return ls
}

// procSampler turns cumulative CPU times from /proc into a CPU percentage
// since the previous sample of the same process group (or since it started).
type procSampler struct {
	mu   sync.Mutex
	last map[int]cpuSample
}

type cpuSample struct {
	ticks uint64
	at    time.Time
}

func newProcSampler() *procSampler { return &procSampler{last: make(map[int]cpuSample)} }

// sample returns the CPU % and resident bytes of the process group led by
// pgid: an app started with `go run` does its work in a child.
func (s *procSampler) sample(pgid int) (cpu float64, rss int64) {
	ticks, rss, start, ok := groupUsage(pgid)
	if !ok {
		return 0, 0
	}
	now := time.Now()
	s.mu.Lock()
	prev, seen := s.last[pgid]
	s.last[pgid] = cpuSample{ticks: ticks, at: now}
	s.mu.Unlock()
	if seen && now.Sub(prev.at) > 0 && ticks >= prev.ticks {
		return float64(ticks-prev.ticks) / clockTicks / now.Sub(prev.at).Seconds() * 100, rss
	}
	if up := uptime(); up > 0 && up > start {
		return float64(ticks) / clockTicks / (up - start) * 100, rss
	}
	return 0, rss
}

// groupUsage sums utime+stime and RSS over the processes of a group, and
// returns the leader's start time in seconds since boot.
func groupUsage(pgid int) (ticks uint64, rss int64, start float64, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, 0, false
	}
	page := int64(os.Getpagesize())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// f[0] is field 3 (state); pgrp is field 5, utime 14, stime 15,
		// starttime 22, rss 24.
		f := readStat(pid)
		if len(f) < 22 {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g != pgid {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		r, _ := strconv.ParseInt(f[21], 10, 64)
		ticks += ut + st
		rss += r * page
		if pid == pgid {
			s, _ := strconv.ParseFloat(f[19], 64)
			start = s / clockTicks
		}
		ok = true
	}
	return ticks, rss, start, ok
}

// readStat returns the fields of /proc/<pid>/stat from field 3 (state) on,
// or nil when pid is gone.
func readStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[0], 64)
	return u
}
