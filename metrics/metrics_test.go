package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
)

// startListener runs the ops listener on a free loopback port until the
// test ends and returns its base URL.
func startListener(t *testing.T, m *Metrics, ready ReadyFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, m, ready, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeListener did not stop within 10s")
		}
	})
	return "http://" + ln.Addr().String()
}

var client = &http.Client{Timeout: 5 * time.Second}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// scrape fetches /metrics and parses it as Prometheus does.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := get(t, base+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics: status %d", status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// value finds the sample of a family whose labels include want; for a
// histogram it is the sample count.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string,
	want map[string]string) float64 {
	t.Helper()
	mf, ok := families[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, metric := range mf.GetMetric() {
		if !hasLabels(metric, want) {
			continue
		}
		switch {
		case metric.Counter != nil:
			return metric.GetCounter().GetValue()
		case metric.Gauge != nil:
			return metric.GetGauge().GetValue()
		case metric.Histogram != nil:
			return float64(metric.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no %s sample with labels %v", name, want)
	return 0
}

func hasLabels(metric *dto.Metric, want map[string]string) bool {
	found := 0
	for _, lp := range metric.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			found++
		}
	}
	return found == len(want)
}

func TestMetricsMoveAfterCalls(t *testing.T) {
	m := New()
	base := startListener(t, m, nil)

	before := scrape(t, base)
	if v := value(t, before, "tokengate_bytes_total", map[string]string{"direction": "in"}); v != 0 {
		t.Fatalf("bytes in before any session = %v", v)
	}

	denied := map[string]string{"method": "password", "outcome": "failure",
		"reason": "token_unknown"}
	m.AuthAttempt("password", "failure", "token_unknown")
	m.AuthAttempt("password", "failure", "token_unknown")
	m.AuthAttempt("keyboard-interactive", "success", "")
	m.SessionStarted()
	m.SessionStarted()
	m.SessionEnded(3*time.Second, 100, 2000)
	m.SessionEnded(time.Second, -1, 5) // a bad count is ignored, not a panic
	m.SessionStarted()
	m.RedisCall(time.Millisecond, nil)
	m.RedisCall(time.Millisecond, redis.Nil)
	m.RedisCall(2*time.Second, context.DeadlineExceeded)
	m.EventDropped("syslog")
	m.EventDropped("syslog")
	m.EventDropped("webhook")
	m.Banned()
	m.SetTokensExpiring(7)
	m.SetTokensExpiring(3)
	m.SessionsCut(2)
	m.SessionsCut(-1)

	after := scrape(t, base)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tokengate_auth_attempts_total", denied, 2},
		{"tokengate_auth_attempts_total",
			map[string]string{"method": "keyboard-interactive", "outcome": "success"}, 1},
		{"tokengate_sessions_live", nil, 1},
		{"tokengate_session_duration_seconds", nil, 2},
		{"tokengate_bytes_total", map[string]string{"direction": "in"}, 100},
		{"tokengate_bytes_total", map[string]string{"direction": "out"}, 2005},
		{"tokengate_redis_call_duration_seconds", nil, 3},
		{"tokengate_redis_errors_total", nil, 1},
		{"tokengate_events_dropped_total", map[string]string{"sink": "syslog"}, 2},
		{"tokengate_events_dropped_total", map[string]string{"sink": "webhook"}, 1},
		{"tokengate_bans_total", nil, 1},
		{"tokengate_tokens_expiring", nil, 3},
		{"tokengate_sessions_cut_total", nil, 2},
	} {
		if got := value(t, after, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := after["go_goroutines"]; !ok {
		t.Error("the Go runtime metrics are missing")
	}
}

// Registries are separate: one Metrics does not see another's counts.
func TestMetricsIndependentRegistries(t *testing.T) {
	a, b := New(), New()
	a.Banned()
	baseB := startListener(t, b, nil)
	if v := value(t, scrape(t, baseB), "tokengate_bans_total", nil); v != 0 {
		t.Fatalf("a ban on one registry shows on another: %v", v)
	}
}

func TestNilMetricsRecordsNothing(t *testing.T) {
	var m *Metrics
	m.AuthAttempt("password", "failure", "token_unknown")
	m.SessionStarted()
	m.SessionEnded(time.Second, 1, 1)
	m.RedisCall(time.Second, errors.New("down"))
	m.EventDropped("syslog")
	m.Banned()
	m.SetTokensExpiring(1)
	m.SessionsCut(1)
	base := startListener(t, m, nil)
	if status, _ := get(t, base+"/metrics"); status != http.StatusNotFound {
		t.Fatalf("/metrics without metrics: status %d", status)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var down atomic.Pointer[error]
	ready := func(ctx context.Context) error {
		if err := down.Load(); err != nil {
			return *err
		}
		return ctx.Err()
	}
	base := startListener(t, New(), ready)

	if status, body := get(t, base+"/healthz"); status != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", status, body)
	}
	if status, _ := get(t, base+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz while ready = %d", status)
	}

	fault := errors.New("redis: PING: connection refused")
	down.Store(&fault)
	status, body := get(t, base+"/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "connection refused") {
		t.Fatalf("/readyz while Redis is down = %d %q", status, body)
	}
	if status, _ := get(t, base+"/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz while not ready = %d", status)
	}

	down.Store(nil)
	if status, _ := get(t, base+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz after recovery = %d", status)
	}
}

func TestServeOffWithoutAddr(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Serve(ctx, "", New(), nil, log); err != nil {
		t.Fatalf("Serve with no address = %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Serve with no address blocked")
	}
}

func TestServeStopsWithContext(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)

	// An address already taken is reported, not ignored.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := Serve(context.Background(), taken.Addr().String(), New(), nil, log); err == nil {
		t.Fatal("Serve on a taken address succeeded")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", New(), nil, log) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop within 10s of cancel")
	}
}
