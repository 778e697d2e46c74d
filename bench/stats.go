package main

import (
	"math"
	"math/rand/v2"
	"slices"
)

// median is the middle of xs (the mean of the two middles for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile is the nearest-rank p-th percentile of xs: the smallest value
// with at least p% of xs at or below it. Of 50 runs, p99 is the slowest.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// ratio is a/b, or NaN when either is missing.
func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}

// ratioInterval is a 90% bootstrap interval of median(a)/median(b): how far
// the ratio moves when the runs are drawn again. With a handful of runs it is
// rough, but it tells a real difference from a noisy one.
func ratioInterval(a, b []float64) (lo, hi float64) {
	if len(a) == 0 || len(b) == 0 {
		return math.NaN(), math.NaN()
	}
	rng := rand.New(rand.NewPCG(7, 11)) // fixed: the same runs give the same interval
	const rounds = 2000
	ratios := make([]float64, rounds)
	ra, rb := make([]float64, len(a)), make([]float64, len(b))
	for i := range ratios {
		for j := range ra {
			ra[j] = a[rng.IntN(len(a))]
		}
		for j := range rb {
			rb[j] = b[rng.IntN(len(b))]
		}
		ratios[i] = ratio(median(ra), median(rb))
	}
	return percentile(ratios, 5), percentile(ratios, 95)
}
