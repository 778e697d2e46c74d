package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusKiB reads one "Field:   1234 kB" line of /proc/<pid>/status.
func statusKiB(pid int, field string) (int64, error) {
	return fieldKiB(fmt.Sprintf("/proc/%d/status", pid), field)
}

func fieldKiB(path, field string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// resetPeak sets a process's VmHWM back to its current RSS (Linux 4.0+), so a
// later VmHWM is the peak of what happened in between.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// descendants lists every process below pid, from one scan of /proc.
func descendants(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	children := map[int][]int{}
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses; the fields
		// after the last ')' are fixed: state, then the parent's pid.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 2 {
			continue
		}
		self, err1 := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		parent, err2 := strconv.Atoi(fields[1])
		if err1 == nil && err2 == nil {
			children[parent] = append(children[parent], self)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 100000 {
		next := queue[0]
		queue = queue[1:]
		out = append(out, children[next]...)
		queue = append(queue, children[next]...)
	}
	return out
}

// treeKiB sums a field over pid and its descendants: VmRSS from status, or
// Pss from smaps_rollup (shared pages counted once across the tree).
func treeKiB(pid int, field string) int64 {
	var sum int64
	for _, p := range append([]int{pid}, descendants(pid)...) {
		path := fmt.Sprintf("/proc/%d/status", p)
		if field == "Pss" {
			path = fmt.Sprintf("/proc/%d/smaps_rollup", p)
		}
		if v, err := fieldKiB(path, field); err == nil {
			sum += v
		}
	}
	return sum
}

// peakSampler records the highest VmRSS of one process and of its whole
// tree while it runs.
type peakSampler struct {
	stop     chan struct{}
	done     sync.WaitGroup
	selfPeak int64
	treePeak int64
}

func samplePeaks(pid int, every time.Duration) *peakSampler {
	s := &peakSampler{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := statusKiB(pid, "VmRSS"); err == nil {
				s.selfPeak = max(s.selfPeak, v)
			}
			s.treePeak = max(s.treePeak, treeKiB(pid, "VmRSS"))
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the peaks in KiB.
func (s *peakSampler) finish() (self, tree int64) {
	close(s.stop)
	s.done.Wait()
	return s.selfPeak, s.treePeak
}
