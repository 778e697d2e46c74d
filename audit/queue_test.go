package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// gate is a delivery function under the test's control: each call reports
// itself on called and then waits for a verdict on release, or for its ctx.
type gate struct {
	called  chan []byte
	release chan error

	mu   sync.Mutex
	got  []float64 // test.seq of each event delivered
	runs int
}

func newGate() *gate {
	return &gate{called: make(chan []byte, 1024), release: make(chan error, 1024)}
}

func (g *gate) deliver(ctx context.Context, msg []byte) error {
	g.mu.Lock()
	g.runs++
	g.mu.Unlock()
	g.called <- msg
	select {
	case err := <-g.release:
		if err == nil {
			var doc map[string]any
			_ = json.Unmarshal(msg, &doc)
			g.mu.Lock()
			g.got = append(g.got, doc["test.seq"].(float64))
			g.mu.Unlock()
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) waitCalled(t *testing.T) []byte {
	t.Helper()
	select {
	case msg := <-g.called:
		return msg
	case <-time.After(5 * time.Second):
		t.Fatal("deliver was not called")
		return nil
	}
}

func closeQueue(t *testing.T, q *Queue, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return q.Close(ctx)
}

// A full queue keeps the newest events and drops the oldest.
func TestQueueDropsOldest(t *testing.T) {
	g := newGate()
	q := NewQueue("test", 3, g.deliver, quietLogger())
	drops := 0
	q.OnDrop = func() { drops++ } // only Send drops here, all on this goroutine

	q.Send(denial(0), time.Now())
	g.waitCalled(t) // event 0 is in flight; the queue itself is empty
	for i := 1; i <= 6; i++ {
		q.Send(denial(i), time.Now())
	}
	if q.Depth() != 3 || q.Dropped() != 3 || drops != 3 {
		t.Fatalf("depth %d dropped %d hook %d, want 3 3 3", q.Depth(), q.Dropped(), drops)
	}

	for range 4 {
		g.release <- nil
	}
	if err := closeQueue(t, q, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	want := []float64{0, 4, 5, 6}
	if len(g.got) != len(want) {
		t.Fatalf("delivered %v, want %v", g.got, want)
	}
	for i := range want {
		if g.got[i] != want[i] {
			t.Fatalf("delivered %v, want %v", g.got, want)
		}
	}
	if q.Delivered() != 4 || q.Dropped() != 3 {
		t.Errorf("delivered %d dropped %d, want 4 3", q.Delivered(), q.Dropped())
	}
}

func TestQueueRetries(t *testing.T) {
	g := newGate()
	q := NewQueue("test", 8, g.deliver, quietLogger())
	q.Backoff, q.MaxBackoff, q.Attempts = time.Millisecond, 2*time.Millisecond, 3

	// Two failures, then the collector takes it.
	g.release <- errors.New("refused")
	g.release <- errors.New("refused")
	g.release <- nil
	q.Send(denial(1), time.Now())
	// Three failures: the event is given up and counted.
	for range 3 {
		g.release <- errors.New("refused")
	}
	q.Send(denial(2), time.Now())

	if err := closeQueue(t, q, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if q.Delivered() != 1 || q.Dropped() != 1 || g.runs != 6 {
		t.Errorf("delivered %d dropped %d runs %d, want 1 1 6",
			q.Delivered(), q.Dropped(), g.runs)
	}
}

// Close stops at its deadline, cuts the delivery in flight, and counts every
// event it could not deliver.
func TestQueueCloseDeadline(t *testing.T) {
	g := newGate()
	q := NewQueue("test", 16, g.deliver, quietLogger())
	for i := range 10 {
		q.Send(denial(i), time.Now())
	}
	g.waitCalled(t)

	if err := closeQueue(t, q, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want deadline exceeded", err)
	}
	if q.Dropped() != 10 || q.Delivered() != 0 || q.Depth() != 0 {
		t.Errorf("dropped %d delivered %d depth %d, want 10 0 0",
			q.Dropped(), q.Delivered(), q.Depth())
	}

	q.Send(denial(11), time.Now())
	if q.Dropped() != 11 {
		t.Errorf("a Send after Close: dropped %d, want 11", q.Dropped())
	}
}

func TestQueueCloseFlushes(t *testing.T) {
	g := newGate()
	q := NewQueue("test", 16, g.deliver, quietLogger())
	for i := range 10 {
		g.release <- nil
		q.Send(denial(i), time.Now())
	}
	if err := closeQueue(t, q, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if q.Delivered() != 10 || q.Dropped() != 0 {
		t.Errorf("delivered %d dropped %d, want 10 0", q.Delivered(), q.Dropped())
	}
	if err := closeQueue(t, q, time.Second); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// Drops are logged in batches, not one line each, and every drop is in one
// of the lines.
func TestQueueReportsDrops(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	g := newGate()
	q := NewQueue("siem", 4, g.deliver, log)
	q.ReportEvery = 20 * time.Millisecond

	start := time.Now()
	q.Send(denial(0), time.Now())
	g.waitCalled(t)
	for i := 1; i <= 1000; i++ {
		q.Send(denial(i), time.Now())
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(hook.AllEntries()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	first := hook.AllEntries()
	if len(first) == 0 {
		t.Fatal("no drop report")
	}
	e := first[0]
	n, _ := e.Data["dropped"].(uint64)
	if e.Level != logrus.WarnLevel || e.Data["sink"] != "siem" || n == 0 ||
		e.Message != fmt.Sprintf("audit: sink siem: dropped %d events", n) {
		t.Errorf("report: %s %q %v", e.Level, e.Message, e.Data)
	}

	g.release <- errors.New("refused")
	_ = closeQueue(t, q, 50*time.Millisecond)
	elapsed := time.Since(start)

	var reported uint64
	entries := hook.AllEntries()
	for _, e := range entries {
		reported += e.Data["dropped"].(uint64)
	}
	if reported != q.Dropped() || q.Dropped() != 1001 {
		t.Errorf("reports add up to %d drops, the queue counted %d", reported, q.Dropped())
	}
	if limit := int(elapsed/q.ReportEvery) + 2; len(entries) > limit {
		t.Errorf("%d reports in %v, want at most %d", len(entries), elapsed, limit)
	}
}
