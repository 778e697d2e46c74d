// Package metrics owns the gateway's Prometheus metrics and the ops HTTP
// listener that serves them with health and readiness checks.
package metrics

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Metrics records what the gateway does, on a registry of its own so that
// tests can build several side by side. A nil *Metrics records nothing, so
// a package can hold one without checking whether metrics are on.
type Metrics struct {
	reg *prometheus.Registry

	authAttempts    *prometheus.CounterVec
	sessionsLive    prometheus.Gauge
	sessionDuration prometheus.Histogram
	bytes           *prometheus.CounterVec
	redisLatency    prometheus.Histogram
	redisErrors     prometheus.Counter
	eventsDropped   *prometheus.CounterVec
	bans            prometheus.Counter
	tokensExpiring  prometheus.Gauge
	sessionsCut     prometheus.Counter
}

// New builds the metrics and registers them, with the Go runtime and
// process collectors, on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		authAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_auth_attempts_total",
			Help: "Login attempts by SSH method, outcome (success, failure) and denial reason.",
		}, []string{"method", "outcome", "reason"}),
		sessionsLive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_sessions_live",
			Help: "rsync sessions running now.",
		}),
		sessionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tokengate_session_duration_seconds",
			Help: "How long ended rsync sessions ran.",
			// From a no-op sync to a multi-hour backup.
			Buckets: []float64{0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600},
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_bytes_total",
			Help: "Bytes carried by ended sessions: in from clients, out to clients.",
		}, []string{"direction"}),
		redisLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tokengate_redis_call_duration_seconds",
			Help: "Latency of Redis calls on the login path.",
			// Up to the default 2s --redis-timeout, past which logins fail.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5},
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_redis_errors_total",
			Help: "Redis calls that failed or timed out.",
		}),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_events_dropped_total",
			Help: "Audit events a sink could not deliver, by sink.",
		}, []string{"sink"}),
		bans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_bans_total",
			Help: "Source addresses banned by this gateway for failed logins.",
		}),
		tokensExpiring: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_tokens_expiring",
			Help: "Live tokens that expire within the warning window.",
		}),
		sessionsCut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_sessions_cut_total",
			Help: "Live sessions ended because their token was revoked or expired.",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.authAttempts, m.sessionsLive, m.sessionDuration, m.bytes, m.redisLatency,
		m.redisErrors, m.eventsDropped, m.bans, m.tokensExpiring, m.sessionsCut,
	)

	// Both directions exist from the start, so rate() over them never sees
	// a series appear mid-range.
	m.bytes.WithLabelValues("in")
	m.bytes.WithLabelValues("out")
	return m
}

// Handler serves the registry in the Prometheus exposition formats; for a
// nil *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// AuthAttempt counts one login attempt. reason is empty on success. The
// labels must come from closed lists (auth methods the gateway offers, the
// audit reasons), never from client input, so the series stay few.
func (m *Metrics) AuthAttempt(method, outcome, reason string) {
	if m == nil {
		return
	}
	m.authAttempts.WithLabelValues(method, outcome, reason).Inc()
}

// SessionStarted counts a session in; SessionEnded counts it out.
func (m *Metrics) SessionStarted() {
	if m == nil {
		return
	}
	m.sessionsLive.Inc()
}

// SessionEnded records an ended session's length and the bytes it carried
// each way (in: from the client, out: to the client).
func (m *Metrics) SessionEnded(d time.Duration, in, out int64) {
	if m == nil {
		return
	}
	m.sessionsLive.Dec()
	m.sessionDuration.Observe(d.Seconds())
	// A counter panics on a negative add; a miscount must not end the gateway.
	m.bytes.WithLabelValues("in").Add(float64(max(in, 0)))
	m.bytes.WithLabelValues("out").Add(float64(max(out, 0)))
}

// RedisCall records one Redis call's latency, and counts it as an error
// unless it succeeded or found nothing (redis.Nil is an answer, not a fault).
func (m *Metrics) RedisCall(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.redisLatency.Observe(d.Seconds())
	if err != nil && !errors.Is(err, redis.Nil) {
		m.redisErrors.Inc()
	}
}

// EventDropped counts one audit event the named sink had to drop.
func (m *Metrics) EventDropped(sink string) {
	if m == nil {
		return
	}
	m.eventsDropped.WithLabelValues(sink).Inc()
}

// Banned counts one new ban. Call it once per ban, when the limiter says the
// ban is new, so gateways sharing a Redis do not count the same ban twice.
func (m *Metrics) Banned() {
	if m == nil {
		return
	}
	m.bans.Inc()
}

// SetTokensExpiring reports how many live tokens expire within the warning
// window, as last counted by the caller.
func (m *Metrics) SetTokensExpiring(n int) {
	if m == nil {
		return
	}
	m.tokensExpiring.Set(float64(n))
}

// SessionsCut counts live sessions ended by revocation or expiry.
func (m *Metrics) SessionsCut(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.sessionsCut.Add(float64(n))
}
