package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/metrics"
)

// sinkOptions say where events go besides stdout.
type sinkOptions struct {
	syslogURL    string
	syslogCA     string
	stream       string
	streamMaxLen int64
	buffer       int
}

func (s *sinkOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&s.syslogURL, "syslog", "",
		"ship events as RFC 5424 syslog to udp://, tcp:// or tls://host:port (default off)")
	fs.StringVar(&s.syslogCA, "syslog-ca", "", "PEM file of CAs trusted for tls:// syslog (default: system)")
	fs.StringVar(&s.stream, "event-stream", audit.DefaultStreamKey,
		"Redis stream every gateway appends events to (empty: off)")
	fs.Int64Var(&s.streamMaxLen, "event-stream-maxlen", 10000, "approximate length bound of the stream")
	fs.IntVar(&s.buffer, "sink-buffer", 10000, "events queued per sink; past it the oldest are dropped")
}

// attach adds the configured sinks to events. Each sits behind its own
// bounded queue, so a slow or dead collector never delays a login or a
// transfer. The returned function flushes them at shutdown.
func (s *sinkOptions) attach(events *audit.Emitter, rdb redis.UniversalClient, host string,
	m *metrics.Metrics, log *logrus.Logger) (func(context.Context), error) {
	if s.buffer < 1 {
		return nil, errors.New("--sink-buffer must be at least 1")
	}
	var queues []*audit.Queue
	add := func(name string, deliver func(context.Context, []byte) error) {
		q := audit.NewQueue(name, s.buffer, deliver, log)
		q.Host = host
		q.OnDrop = func() { m.EventDropped(name) }
		events.AddSink(q)
		queues = append(queues, q)
	}

	if s.syslogURL != "" {
		cfg := audit.SyslogConfig{URL: s.syslogURL, AppName: "tokengate", Hostname: host}
		u, err := url.Parse(s.syslogURL)
		if err != nil {
			return nil, fmt.Errorf("--syslog: %w", err)
		}
		if u.Scheme == "tls" {
			cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
			if s.syslogCA != "" {
				pem, err := os.ReadFile(s.syslogCA)
				if err != nil {
					return nil, fmt.Errorf("--syslog-ca: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("--syslog-ca: no certificate in %s", s.syslogCA)
				}
				cfg.TLS.RootCAs = pool
			}
		}
		sl, err := audit.NewSyslog(cfg)
		if err != nil {
			return nil, fmt.Errorf("--syslog: %w", err)
		}
		add("syslog", sl.Deliver)
	}
	if s.stream != "" {
		st := audit.NewStream(rdb, s.stream, s.streamMaxLen)
		st.Host = host
		add("stream", st.Deliver)
	}

	return func(ctx context.Context) {
		for _, q := range queues {
			_ = q.Close(ctx)
		}
	}, nil
}

func hostName() string {
	h, err := os.Hostname()
	if err != nil {
		return "tokengate"
	}
	return h
}
