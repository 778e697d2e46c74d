package audit

import (
	"github.com/tokengate/tokengate/internal/syslogtest"

	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"
	"github.com/sirupsen/logrus"
)

func quietLogger() *logrus.Logger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return log
}

func denial(i int) Event {
	return Event{
		Action:     ActionAuthDenied,
		Outcome:    "failure",
		Reason:     ReasonTokenExpired,
		Message:    fmt.Sprintf("token 3k9w0c2hx1ab expired (%d)", i),
		TokenID:    "3k9w0c2hx1ab",
		User:       "deploy",
		SourceIP:   "127.0.0.1",
		SourcePort: 40000 + i,
		Fields:     map[string]any{"test.seq": i},
	}
}

// syslogQueue puts a Syslog for url behind a Queue with quick retries, as
// the gateway wires it, and closes both when the test ends.
func syslogQueue(t testing.TB, url string, cfg *tls.Config) (*Queue, *Syslog) {
	t.Helper()
	s, err := NewSyslog(SyslogConfig{
		URL: url, TLS: cfg, Hostname: "gw-test",
		DialTimeout: time.Second, WriteTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	q := NewQueue("syslog", 256, s.Deliver, quietLogger())
	q.Host = "gw-test"
	q.Backoff, q.MaxBackoff, q.Attempts = 10*time.Millisecond, 50*time.Millisecond, 100
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = q.Close(ctx)
		_ = s.Close()
	})
	return q, s
}

// eventOf decodes the JSON MSG of a received message.
func eventOf(t testing.TB, m *rfc5424.SyslogMessage) map[string]any {
	t.Helper()
	if m.Message == nil {
		t.Fatal("syslog message has no MSG")
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(*m.Message), &doc); err != nil {
		t.Fatalf("MSG is not JSON: %v: %q", err, *m.Message)
	}
	return doc
}

func TestSyslogTransports(t *testing.T) {
	serverTLS, clientTLS := syslogtest.SelfSigned(t)
	for _, tc := range []struct {
		name string
		recv func(t testing.TB) *syslogtest.Receiver
		url  func(addr string) string
	}{
		{"udp", syslogtest.StartUDP, func(a string) string { return "udp://" + a }},
		{"tcp", func(t testing.TB) *syslogtest.Receiver {
			return syslogtest.StartStream(t, "127.0.0.1:0", nil)
		}, func(a string) string { return "tcp://" + a }},
		{"tls", func(t testing.TB) *syslogtest.Receiver {
			return syslogtest.StartStream(t, "127.0.0.1:0", serverTLS)
		}, func(a string) string { return "tls://" + a }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.recv(t)
			q, _ := syslogQueue(t, tc.url(r.Addr), clientTLS)

			at := time.Date(2026, 12, 4, 15, 40, 1, 123456789, time.UTC)
			q.Send(denial(1), at)
			q.Send(Event{Action: ActionSessionStart, Outcome: "success"}, at)

			m, err := r.Next(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			checkHeader(t, m, 4, "auth.denied")
			if want := at.Truncate(time.Microsecond); !m.Timestamp.Equal(want) {
				t.Errorf("TIMESTAMP = %v, want %v", m.Timestamp, want)
			}
			doc := eventOf(t, m)
			if doc["event.action"] != "auth.denied" || doc["event.reason"] != "token_expired" ||
				doc["host.name"] != "gw-test" || doc["source.port"] != 40001.0 {
				t.Errorf("MSG = %v", doc)
			}

			m, err = r.Next(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			checkHeader(t, m, 6, "session.start")
			if doc := eventOf(t, m); doc["event.outcome"] != "success" {
				t.Errorf("MSG = %v", doc)
			}
		})
	}
}

func checkHeader(t *testing.T, m *rfc5424.SyslogMessage, severity uint8, msgID string) {
	t.Helper()
	str := func(p *string) string {
		if p == nil {
			return "-"
		}
		return *p
	}
	if *m.Facility != FacilityAuthPriv || *m.Severity != severity {
		t.Errorf("facility/severity = %d/%d, want %d/%d",
			*m.Facility, *m.Severity, FacilityAuthPriv, severity)
	}
	if m.Version != 1 || str(m.Appname) != "tokengate" || str(m.Hostname) != "gw-test" ||
		str(m.MsgID) != msgID || str(m.ProcID) == "-" || m.StructuredData != nil {
		t.Errorf("header = v%d app %s host %s msgid %s procid %s sd %v", m.Version,
			str(m.Appname), str(m.Hostname), str(m.MsgID), str(m.ProcID), m.StructuredData)
	}
}

// A TLS collector whose certificate the gateway does not trust gets nothing.
func TestSyslogTLSVerifiesCollector(t *testing.T) {
	serverTLS, _ := syslogtest.SelfSigned(t)
	r := syslogtest.StartStream(t, "127.0.0.1:0", serverTLS)
	_, otherClient := syslogtest.SelfSigned(t)
	s, err := NewSyslog(SyslogConfig{URL: "tls://" + r.Addr, TLS: otherClient})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = s.Deliver(ctx, EncodeJSON(denial(1), time.Now(), "gw-test"))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Deliver to an untrusted collector: %v", err)
	}
}

// The collector restarts on the same port; the gateway goes on without a
// restart, and the event sent while the collector was down arrives too.
func TestSyslogCollectorRestart(t *testing.T) {
	r := syslogtest.StartStream(t, "127.0.0.1:0", nil)
	q, s := syslogQueue(t, "tcp://"+r.Addr, nil)

	q.Send(denial(1), time.Now())
	m, err := r.Next(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := eventOf(t, m)["test.seq"]; got != 1.0 {
		t.Fatalf("first event: test.seq = %v", got)
	}

	r.Close()
	waitPeerClosed(t, s)
	q.Send(denial(2), time.Now())

	r2 := syslogtest.StartStream(t, r.Addr, nil)
	q.Send(denial(3), time.Now())
	for _, want := range []float64{2, 3} {
		m, err := r2.Next(5 * time.Second)
		if err != nil {
			t.Fatalf("event %v after the restart: %v", want, err)
		}
		if got := eventOf(t, m)["test.seq"]; got != want {
			t.Fatalf("after the restart: test.seq = %v, want %v", got, want)
		}
	}
	if q.Dropped() != 0 {
		t.Errorf("Dropped = %d, want 0", q.Dropped())
	}
}

// waitPeerClosed waits until the sender's kernel has seen the collector close
// its connection, so the next delivery is the one that must notice it.
func waitPeerClosed(t *testing.T, s *Syslog) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		closed := s.conn == nil || peerClosed(s.conn)
		s.mu.Unlock()
		if closed {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the sender never saw the collector close")
}

func TestPeerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}

	if peerClosed(client) {
		t.Fatal("an open connection reads as closed")
	}
	server.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !peerClosed(client) {
		if time.Now().After(deadline) {
			t.Fatal("a connection the peer closed still reads as open")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A collector that is gone, or that accepts and never reads, costs Send
// nothing: every event is either delivered or counted as dropped.
func TestSyslogDeadCollectorNeverBlocksSend(t *testing.T) {
	const total = 100_000
	for _, tc := range []struct {
		name string
		addr func(testing.TB) string
	}{
		{"nothing listening", deadAddr},
		{"never reads", silentCollector},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSyslog(SyslogConfig{URL: "tcp://" + tc.addr(t),
				DialTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const capacity = 64
			q := NewQueue("syslog", capacity, s.Deliver, quietLogger())
			q.Backoff, q.MaxBackoff, q.Attempts = time.Millisecond, time.Millisecond, 2
			var hooked atomic.Uint64
			q.OnDrop = func() { hooked.Add(1) }

			// A Send that blocked would hang here until the test binary's
			// own timeout; the bound is a guard against that, not a measure.
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				for i := range total {
					q.Send(denial(i), time.Now())
				}
			}()
			select {
			case <-sent:
			case <-time.After(2 * time.Minute):
				t.Fatal("Send blocked on a dead collector")
			}

			// At most the queue and the one event in flight are pending.
			pending := uint64(capacity + 1)
			if got := q.Dropped() + q.Delivered(); got+pending < total {
				t.Errorf("after the sends: dropped %d + delivered %d, want >= %d",
					q.Dropped(), q.Delivered(), total-pending)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = q.Close(ctx)
			if q.Dropped()+q.Delivered() != total || q.Dropped() == 0 {
				t.Errorf("after Close: dropped %d + delivered %d, want %d with some dropped",
					q.Dropped(), q.Delivered(), total)
			}
			if hooked.Load() != q.Dropped() {
				t.Errorf("OnDrop ran %d times for %d drops", hooked.Load(), q.Dropped())
			}
			if q.Depth() != 0 {
				t.Errorf("Depth after Close = %d", q.Depth())
			}
		})
	}
}

func BenchmarkSendWithDeadSink(b *testing.B) {
	s, err := NewSyslog(SyslogConfig{URL: "tcp://" + silentCollector(b),
		DialTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	q := NewQueue("syslog", 1024, s.Deliver, quietLogger())
	ev, at := denial(1), time.Now()

	b.ReportAllocs()
	for b.Loop() {
		q.Send(ev, at)
	}
	b.StopTimer()
	b.ReportMetric(float64(q.Dropped())/float64(b.N), "dropped/op")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = q.Close(ctx)
}

func TestNewSyslogRejects(t *testing.T) {
	for _, url := range []string{
		"", "127.0.0.1:514", "http://127.0.0.1:514", "tcp://127.0.0.1", "tcp://:514",
		"udp://127.0.0.1:514/path", "unix:///dev/log",
	} {
		if _, err := NewSyslog(SyslogConfig{URL: url}); err == nil ||
			!strings.HasPrefix(err.Error(), "audit: sink syslog: ") {
			t.Errorf("NewSyslog(%q) = %v, want an audit: sink syslog error", url, err)
		}
	}
	if _, err := NewSyslog(SyslogConfig{URL: "udp://127.0.0.1:514", Facility: 24}); err == nil {
		t.Error("facility 24 accepted")
	}
}
