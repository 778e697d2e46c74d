package metrics

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// ReadyFunc says whether the gateway can serve logins now; the caller passes
// a Redis PING under a short timeout. A nil ReadyFunc means always ready.
type ReadyFunc func(ctx context.Context) error

// The ops listener's bounds. A scrape of a few hundred series takes
// milliseconds; the limits only stop a slow or stuck client holding a
// connection open.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	readyTimeout      = 5 * time.Second // backstop over the caller's own timeout
	shutdownTimeout   = 5 * time.Second
)

// Serve runs the ops listener on addr until ctx ends: /metrics for
// Prometheus, /healthz (200 while the process runs) and /readyz (200 while
// ready returns nil, 503 with the reason otherwise). An empty addr means the
// listener is off and Serve returns nil at once.
func Serve(ctx context.Context, addr string, m *Metrics, ready ReadyFunc,
	log *logrus.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, m, ready, log)
}

// ServeListener is Serve on a listener the caller opened; it closes ln.
func ServeListener(ctx context.Context, ln net.Listener, m *Metrics, ready ReadyFunc,
	log *logrus.Logger) error {
	errLog := log.WriterLevel(logrus.WarnLevel)
	defer errLog.Close()
	srv := &http.Server{
		Handler:           newMux(m, ready),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          stdlog.New(errLog, "metrics: http: ", 0),
	}

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.WithField("addr", ln.Addr().String()).Info("metrics: listen: started")

	select {
	case err := <-done:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	log.WithField("addr", ln.Addr().String()).Info("metrics: listen: stopped")
	return err
}

func newMux(m *Metrics, ready ReadyFunc) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			if err := ready(ctx); err != nil {
				// The listener is for operators (loopback by default), so
				// the reason is shown in full to save a trip to the log.
				writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		writeText(w, http.StatusOK, "ready")
	})
	return mux
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, body)
}
