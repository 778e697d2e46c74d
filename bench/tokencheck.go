package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/auth"
)

// tokenCheck is the cost of checking a token at login, measured in this
// process with the gateway's own auth package against the bench's
// redis-server, next to a plain PING on the same connection pool.
type tokenCheck struct {
	Samples int `json:"samples"`
	// PING: one Redis round trip.
	PingP50Ms float64 `json:"ping_p50_ms"`
	PingP99Ms float64 `json:"ping_p99_ms"`
	// Verify: parse, one pipelined lookup of the token and its meta record,
	// the secret's hash compared.
	VerifyP50Ms float64 `json:"verify_p50_ms"`
	VerifyP99Ms float64 `json:"verify_p99_ms"`
	// Check: what the gateway does for a token at login, in its order: the
	// token's failure count (limiter), Verify, and the session lease.
	CheckP50Ms float64 `json:"check_p50_ms"`
	CheckP99Ms float64 `json:"check_p99_ms"`
	// AddedP99Ms is CheckP99Ms minus PingP99Ms: the target's measure.
	AddedP99Ms       float64 `json:"added_p99_ms"`
	VerifyAddedP99Ms float64 `json:"verify_added_p99_ms"`
	// InGateway is the gateway's own histogram of the limiter and Verify
	// (tokengate_redis_call_duration_seconds) after case 4: cumulative
	// counts per upper bound in seconds.
	InGateway map[string]float64 `json:"in_gateway_histogram,omitempty"`
	Pass      bool               `json:"pass"`
}

// measureTokenCheck runs n rounds of PING, Verify and the full check,
// interleaved so that each sees the same Redis.
func (b *bench) measureTokenCheck(ctx context.Context, n int) (*tokenCheck, error) {
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr})
	defer rdb.Close()
	store := auth.NewStore(rdb)
	verifier := &auth.Verifier{Store: store, Timeout: 2 * time.Second}
	limiter := auth.NewLimiter(rdb, auth.LimiterConfig{
		AllowList: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	tok, err := auth.ParseToken(b.token)
	if err != nil {
		return nil, err
	}
	const member = "bench/token-check"

	check := func() error {
		if _, err := limiter.TokenLimited(ctx, tok.ID); err != nil {
			return err
		}
		rec, err := verifier.Verify(ctx, b.token, "bench")
		if err != nil {
			return err
		}
		ok, _, err := store.AcquireLogin(ctx, rec.ID, member, rec.MaxSessions, time.Now())
		if err == nil && !ok {
			err = fmt.Errorf("session lease refused")
		}
		return err
	}
	var ping, verify, full []float64
	ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
	for i := range n + 50 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, err
		}
		t1 := time.Now()
		if _, err := verifier.Verify(ctx, b.token, "bench"); err != nil {
			return nil, err
		}
		t2 := time.Now()
		if err := check(); err != nil {
			return nil, err
		}
		t3 := time.Now()
		_ = store.ReleaseLogin(ctx, tok.ID, member)
		if i < 50 {
			continue // warm-up: connections, script cache
		}
		ping = append(ping, ms(t1.Sub(t0)))
		verify = append(verify, ms(t2.Sub(t1)))
		full = append(full, ms(t3.Sub(t2)))
	}
	tc := &tokenCheck{
		Samples:   n,
		PingP50Ms: median(ping), PingP99Ms: percentile(ping, 99),
		VerifyP50Ms: median(verify), VerifyP99Ms: percentile(verify, 99),
		CheckP50Ms: median(full), CheckP99Ms: percentile(full, 99),
	}
	tc.AddedP99Ms = tc.CheckP99Ms - tc.PingP99Ms
	tc.VerifyAddedP99Ms = tc.VerifyP99Ms - tc.PingP99Ms
	tc.Pass = tc.AddedP99Ms < 1
	return tc, nil
}
