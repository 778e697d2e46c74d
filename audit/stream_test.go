package audit

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tokengate/tokengate/internal/redistest"
)

func redisClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Two gateways append to one stream; one reader sees both, each entry with
// its host and the event's JSON.
func TestStreamFleet(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redisClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, host := range []string{"gw1", "gw2"} {
		s := NewStream(rdb, "", 0)
		s.Host = host
		q := NewQueue("stream", 64, s.Deliver, quietLogger())
		q.Host = host
		q.Send(denial(1), time.Now())
		q.Send(Event{Action: ActionSessionEnd, Outcome: "success"}, time.Now())
		if err := q.Close(ctx); err != nil || q.Delivered() != 2 {
			t.Fatalf("%s: Close %v, delivered %d", host, err, q.Delivered())
		}
	}

	entries, err := rdb.XRange(ctx, DefaultStreamKey, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		t.Fatalf("XRANGE has %d entries, want 4", len(entries))
	}
	want := []struct{ host, action string }{
		{"gw1", "auth.denied"}, {"gw1", "session.end"},
		{"gw2", "auth.denied"}, {"gw2", "session.end"},
	}
	for i, e := range entries {
		var doc map[string]any
		if err := json.Unmarshal([]byte(e.Values["event"].(string)), &doc); err != nil {
			t.Fatalf("entry %s: event is not JSON: %v", e.ID, err)
		}
		if e.Values["host"] != want[i].host || doc["host.name"] != want[i].host ||
			doc["event.action"] != want[i].action ||
			(want[i].action == "auth.denied") != (doc["event.reason"] == "token_expired") {
			t.Errorf("entry %s = %v, want host %s action %s", e.ID, e.Values,
				want[i].host, want[i].action)
		}
	}
	// redis-cli shows the same, as an operator would look.
	out, err := srv.CLI("XLEN", DefaultStreamKey)
	if err != nil || strings.TrimSpace(out) != "4" {
		t.Errorf("redis-cli XLEN = %q %v", out, err)
	}
}

// MAXLEN ~ keeps the stream near its bound however many events arrive.
func TestStreamMaxLen(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redisClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Redis trims "~" streams by whole nodes; small nodes make the bound tight.
	if err := rdb.ConfigSet(ctx, "stream-node-max-entries", "10").Err(); err != nil {
		t.Fatal(err)
	}
	s := NewStream(rdb, "tokengate:test:events", 20)
	for i := range 500 {
		if err := s.Deliver(ctx, EncodeJSON(denial(i), time.Now(), "gw1")); err != nil {
			t.Fatal(err)
		}
	}
	n, err := rdb.XLen(ctx, "tokengate:test:events").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 || n > 30 {
		t.Errorf("XLEN = %d, want 20..30", n)
	}
}

// Redis going away fails a delivery with a clear error; when it returns,
// deliveries go on through the same client.
func TestStreamRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redisClient(t, srv)
	s := NewStream(rdb, "", 0)
	deliver := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return s.Deliver(ctx, EncodeJSON(denial(1), time.Now(), "gw1"))
	}

	if err := deliver(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := deliver(); err == nil ||
		!strings.HasPrefix(err.Error(), "audit: sink stream: XADD tokengate:events: ") {
		t.Fatalf("Deliver with Redis down = %v", err)
	}
	srv.Restart()
	if err := deliver(); err != nil {
		t.Fatalf("Deliver after Redis returned: %v", err)
	}
}
