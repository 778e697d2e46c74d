package audit

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Queue is a Sink that holds encoded events in a fixed ring and hands them,
// one at a time, to a delivery function on its own goroutine. A slow or dead
// destination therefore never slows a login or a transfer: when the ring is
// full the oldest event is dropped, counted and reported, and the newest kept,
// since during an outage the latest denials are the ones an analyst needs.
type Queue struct {
	// Host is the host.name of every event; NewQueue sets it to os.Hostname.
	Host string
	// OnDrop, when set, is called once for every dropped event, for a metric.
	// It runs on the goroutine that dropped the event, a caller of Send
	// among them, so it must not block.
	OnDrop func()
	// Attempts bounds the tries to deliver one event before it is dropped;
	// a bound keeps one event the collector always refuses from stalling
	// all the others behind it.
	Attempts int
	// Backoff is the wait after the first failed try; it doubles after
	// each further failure, up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one call of the delivery function.
	Timeout time.Duration
	// ReportEvery is the least time between two log lines about drops, so
	// an outage does not flood the log it is reported in.
	ReportEvery time.Duration

	name    string
	deliver func(ctx context.Context, msg []byte) error
	log     *logrus.Logger

	start sync.Once // the delivery goroutine starts on first use

	mu     sync.Mutex
	ring   [][]byte
	head   int // index of the oldest event
	n      int // events in the ring
	closed bool

	wake    chan struct{} // a Send happened; capacity 1 so Send never waits
	closing chan struct{} // Close was called
	done    chan struct{} // the delivery goroutine has ended

	// ctx bounds every delivery; Close cancels it when its own ctx ends.
	ctx    context.Context
	cancel context.CancelFunc

	dropped   atomic.Uint64
	delivered atomic.Uint64

	reported uint64 // drops already logged; only the report goroutine uses it
	lastErr  error  // why the last event given up failed; guarded by mu
}

// The defaults of a new Queue's tunable fields.
const (
	DefaultQueueAttempts    = 4
	DefaultQueueBackoff     = 200 * time.Millisecond
	DefaultQueueMaxBackoff  = 5 * time.Second
	DefaultQueueTimeout     = 10 * time.Second
	DefaultQueueReportEvery = 10 * time.Second
)

// NewQueue makes a queue of at most capacity events in front of deliver,
// which is called from one goroutine and must return soon after its ctx ends.
// name says which sink a log line or error is about. Change the exported
// fields, if at all, before the first Send: the delivery goroutine starts
// then and reads them from then on.
func NewQueue(name string, capacity int, deliver func(ctx context.Context, msg []byte) error,
	log *logrus.Logger) *Queue {
	if capacity < 1 {
		capacity = 1
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	host, _ := os.Hostname()
	ctx, cancel := context.WithCancel(context.Background())
	return &Queue{
		Host:        host,
		Attempts:    DefaultQueueAttempts,
		Backoff:     DefaultQueueBackoff,
		MaxBackoff:  DefaultQueueMaxBackoff,
		Timeout:     DefaultQueueTimeout,
		ReportEvery: DefaultQueueReportEvery,
		name:        name,
		deliver:     deliver,
		log:         log,
		ring:        make([][]byte, capacity),
		wake:        make(chan struct{}, 1),
		closing:     make(chan struct{}),
		done:        make(chan struct{}),
		ctx:         ctx,
		cancel:      cancel,
	}
}

// Send encodes the event and queues it without waiting, dropping the oldest
// queued event when the queue is full. After Close it only counts a drop.
func (q *Queue) Send(e Event, at time.Time) {
	q.start.Do(func() { go q.run() })
	msg := EncodeJSON(e, at, q.Host)

	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.drop()
		return
	}
	full := q.n == len(q.ring)
	if full {
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	q.ring[(q.head+q.n)%len(q.ring)] = msg
	q.n++
	q.mu.Unlock()

	if full {
		q.drop()
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Dropped counts events that never reached the destination: pushed out of a
// full queue, refused on every try, sent after Close, or left when Close ran
// out of time.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }

// Delivered counts events the destination accepted.
func (q *Queue) Delivered() uint64 { return q.delivered.Load() }

// Depth is the number of events waiting, not counting one being delivered.
func (q *Queue) Depth() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Close stops taking events and delivers those still queued. If ctx ends
// first, it cancels the delivery in progress, counts what is left as dropped
// and returns ctx's error. Either way the delivery goroutine has ended, and
// every event sent is counted as delivered or dropped.
func (q *Queue) Close(ctx context.Context) error {
	q.start.Do(func() { go q.run() })
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.closing)
	}
	q.mu.Unlock()

	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		q.cancel()
		<-q.done
		return ctx.Err()
	}
}

func (q *Queue) drop() {
	q.dropped.Add(1)
	if q.OnDrop != nil {
		q.OnDrop()
	}
}

// pop takes the oldest event; ok is false when the queue is empty.
func (q *Queue) pop() (msg []byte, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return nil, false
	}
	msg = q.ring[q.head]
	q.ring[q.head] = nil
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	return msg, true
}

// run is the delivery goroutine: it drains the ring whenever woken, and
// after Close drains what is left and ends. Drops are reported beside it, so
// a delivery that hangs until its timeout does not hold the report back.
func (q *Queue) run() {
	defer close(q.done)
	defer q.cancel()
	stopReports, reportsDone := make(chan struct{}), make(chan struct{})
	go q.reportLoop(stopReports, reportsDone)
	defer func() {
		close(stopReports)
		<-reportsDone
	}()

	for {
		select {
		case <-q.wake:
			q.drain()
		case <-q.closing:
			q.drain()
			q.discard()
			return
		}
	}
}

// drain delivers queued events until the queue is empty or the queue's
// context ends.
func (q *Queue) drain() {
	for q.ctx.Err() == nil {
		msg, ok := q.pop()
		if !ok {
			return
		}
		if q.deliverOne(msg) {
			q.delivered.Add(1)
		} else {
			q.drop()
		}
	}
}

// deliverOne tries one event up to Attempts times, waiting longer after each
// failure; it gives up early when the queue's context ends.
func (q *Queue) deliverOne(msg []byte) bool {
	wait, timeout := q.Backoff, q.Timeout
	if timeout <= 0 {
		timeout = DefaultQueueTimeout
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(q.ctx, timeout)
		err := q.deliver(ctx, msg)
		cancel()
		if err == nil {
			return true
		}
		if attempt >= q.Attempts || q.ctx.Err() != nil {
			q.mu.Lock()
			q.lastErr = err
			q.mu.Unlock()
			return false
		}

		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-q.ctx.Done():
			timer.Stop()
			return false
		}
		wait = min(2*wait, q.MaxBackoff)
	}
}

// discard counts every event still queued as dropped; Close ran out of time.
func (q *Queue) discard() {
	for {
		if _, ok := q.pop(); !ok {
			return
		}
		q.drop()
	}
}

// reportLoop logs drops at most once per ReportEvery, and once more when
// the queue stops, so every drop is in some line.
func (q *Queue) reportLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := q.ReportEvery
	if every <= 0 {
		every = DefaultQueueReportEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			q.report()
		case <-stop:
			q.report()
			return
		}
	}
}

// report logs the drops since the last report, if there were any.
func (q *Queue) report() {
	total := q.dropped.Load()
	if total == q.reported {
		return
	}
	n := total - q.reported
	q.reported = total
	q.mu.Lock()
	depth, lastErr := q.n, q.lastErr
	q.lastErr = nil
	q.mu.Unlock()

	entry := q.log.WithFields(logrus.Fields{
		"sink":          q.name,
		"dropped":       n,
		"dropped_total": total,
		"delivered":     q.Delivered(),
		"queue.depth":   depth,
	})
	if lastErr != nil {
		entry = entry.WithError(lastErr)
	}
	entry.Warnf("audit: sink %s: dropped %d events", q.name, n)
}
