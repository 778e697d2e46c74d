package main

import (
	"context"
	"regexp"
	"time"
)

// series is one side's runs of one measurement, in seconds.
type series struct {
	Runs     []float64 `json:"runs_s"`
	Median   float64   `json:"median_s"`
	P99      float64   `json:"p99_s,omitempty"`
	MBps     float64   `json:"mb_per_s,omitempty"`
	Failures int       `json:"failures,omitempty"`
	// Peaks of the concurrency case, in KiB: the server process alone, and
	// the server with every process below it (jails, rsync, sshd children).
	PeakRSSKiB     int64 `json:"peak_rss_kib,omitempty"`
	TreePeakRSSKiB int64 `json:"tree_peak_rss_kib,omitempty"`
	// FailureReasons counts failed runs by their message, digits masked so
	// that runs differing only in a path or a port count together.
	FailureReasons map[string]int `json:"failure_reasons,omitempty"`
}

// fail counts one failed run.
func (s *series) fail(err error) {
	s.Failures++
	if s.FailureReasons == nil {
		s.FailureReasons = map[string]int{}
	}
	if len(s.FailureReasons) < 20 {
		s.FailureReasons[reasonKey(err)]++
	}
}

var digits = regexp.MustCompile(`[0-9]+`)

func reasonKey(err error) string {
	return clip(digits.ReplaceAllString(err.Error(), "#"), 300)
}

// finish computes the summary; a series without runs keeps zeros (JSON has
// no NaN).
func (s *series) finish(withP99 bool) {
	if len(s.Runs) == 0 {
		return
	}
	s.Median = median(s.Runs)
	if withP99 {
		s.P99 = percentile(s.Runs, 99)
	}
}

// step is one timed client run; check, if set, runs after the clock stops.
type step struct {
	prep  func(s *side) error
	timed func(ctx context.Context, s *side) (time.Duration, error)
	check func(s *side) error
}

// runPairs runs a step n times on both sides, alternating which side goes
// first so that drift (page cache, a busy neighbour) falls on both evenly.
// A failed run is counted and left out of the median; the first error is
// returned with the series.
func runPairs(ctx context.Context, n int, sides [2]*side, st step) ([2]*series, error) {
	out := [2]*series{{}, {}}
	var first error
	for i := range n {
		order := []int{0, 1}
		if i%2 == 1 {
			order = []int{1, 0}
		}
		for _, k := range order {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			err := runOnce(ctx, sides[k], st, &out[k].Runs)
			if err != nil {
				out[k].fail(err)
				if first == nil {
					first = err
				}
			}
		}
	}
	for _, s := range out {
		s.finish(false)
	}
	return out, first
}

func runOnce(ctx context.Context, s *side, st step, runs *[]float64) error {
	if st.prep != nil {
		if err := st.prep(s); err != nil {
			return err
		}
	}
	took, err := st.timed(ctx, s)
	if err != nil {
		return err
	}
	if st.check != nil {
		if err := st.check(s); err != nil {
			return err
		}
	}
	*runs = append(*runs, took.Seconds())
	return nil
}
