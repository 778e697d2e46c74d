package main

import (
	"math"
	"os/exec"
	"testing"
)

// The bench itself is too long for `make test`; these checks are cheap:
// the script parses, and the statistics the table rests on are right.

func TestRunScriptParses(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if out, err := exec.Command(bash, "-n", "run.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n run.sh: %v: %s", err, out)
	}
}

func TestStatistics(t *testing.T) {
	for _, tc := range []struct {
		xs          []float64
		median, p99 float64
	}{
		{[]float64{3, 1, 2}, 2, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 4},
		{[]float64{7}, 7, 7},
	} {
		if got := median(tc.xs); got != tc.median {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.median)
		}
		if got := percentile(tc.xs, 99); got != tc.p99 {
			t.Errorf("percentile(%v, 99) = %v, want %v", tc.xs, got, tc.p99)
		}
	}
	fifty := make([]float64, 50)
	for i := range fifty {
		fifty[i] = float64(i + 1)
	}
	if got := percentile(fifty, 99); got != 50 {
		t.Errorf("p99 of 1..50 = %v, want 50 (nearest rank)", got)
	}
	if !math.IsNaN(median(nil)) || !math.IsNaN(ratio(1, 0)) {
		t.Error("empty input must give NaN, not a number")
	}
}
