package audit

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"
)

// Syslog facility codes (RFC 5424, section 6.2.1) that suit the gateway.
const (
	FacilityAuth     = 4
	FacilityAuthPriv = 10
	FacilityLocal0   = 16
)

// The severities the gateway's events map to (RFC 5424, section 6.2.1).
const (
	severityWarning = 4
	severityInfo    = 6
)

// SyslogConfig says where and how Syslog sends events.
type SyslogConfig struct {
	// URL is udp://host:port, tcp://host:port or tls://host:port. There is
	// no default: an empty URL is an error, so nothing is sent anywhere
	// unless an operator names the collector.
	URL string
	// TLS configures tls:// connections; nil means the system's roots, with
	// the server name taken from URL.
	TLS *tls.Config
	// AppName is the APP-NAME of every message; empty means "tokengate".
	AppName string
	// Facility defaults, when zero, to authpriv (10): the events name users,
	// tokens and source addresses, and authpriv is the facility syslog
	// daemons route to restricted files and SIEM relays already watch for
	// authorization records. Kernel (0) cannot be chosen, which is as well:
	// it is reserved for the kernel.
	Facility int
	// Hostname is the HOSTNAME of every message; empty means os.Hostname.
	Hostname string
	// DialTimeout bounds connecting, including the TLS handshake; zero is 5s.
	DialTimeout time.Duration
	// WriteTimeout bounds writing one message; zero is 5s.
	WriteTimeout time.Duration
}

// Syslog delivers encoded events to a syslog collector as RFC 5424 messages
// whose MSG is the event's JSON. Over TCP and TLS each message is framed by
// octet counting (RFC 6587, RFC 5425), so a JSON document holding a newline
// cannot split one event in two; over UDP each message is one datagram.
//
// It connects on the first delivery and again after any failure, so a
// collector that restarts is picked up again without restarting the gateway.
// Put it behind a Queue: Deliver waits on the network.
type Syslog struct {
	cfg     SyslogConfig
	network string // "udp" or "tcp"
	addr    string // host:port
	useTLS  bool
	procID  string

	mu   sync.Mutex
	conn net.Conn
}

// NewSyslog checks cfg and returns a Syslog that has not connected yet.
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || cfg.URL == "" {
		return nil, fmt.Errorf("audit: sink syslog: URL %q is not scheme://host:port", cfg.URL)
	}
	s := &Syslog{cfg: cfg, addr: u.Host, procID: strconv.Itoa(os.Getpid())}
	switch u.Scheme {
	case "udp", "tcp":
		s.network = u.Scheme
	case "tls":
		s.network, s.useTLS = "tcp", true
	default:
		return nil, fmt.Errorf("audit: sink syslog: URL %q: scheme must be udp, tcp or tls",
			cfg.URL)
	}
	if u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("audit: sink syslog: URL %q must be scheme://host:port", cfg.URL)
	}

	if s.cfg.AppName == "" {
		s.cfg.AppName = "tokengate"
	}
	if s.cfg.Facility == 0 {
		s.cfg.Facility = FacilityAuthPriv
	}
	if s.cfg.Facility < 0 || s.cfg.Facility > 23 {
		return nil, fmt.Errorf("audit: sink syslog: facility %d is outside 0-23", cfg.Facility)
	}
	if s.cfg.Hostname == "" {
		s.cfg.Hostname, _ = os.Hostname()
	}
	if s.cfg.DialTimeout <= 0 {
		s.cfg.DialTimeout = 5 * time.Second
	}
	if s.cfg.WriteTimeout <= 0 {
		s.cfg.WriteTimeout = 5 * time.Second
	}
	if s.useTLS {
		if s.cfg.TLS == nil {
			s.cfg.TLS = &tls.Config{}
		} else {
			s.cfg.TLS = s.cfg.TLS.Clone()
		}
		if s.cfg.TLS.ServerName == "" {
			s.cfg.TLS.ServerName = u.Hostname()
		}
	}
	return s, nil
}

// Deliver sends one encoded event (EncodeJSON's output) as one syslog
// message. A failed write closes the connection, and the next call dials
// again; the caller retries.
func (s *Syslog) Deliver(ctx context.Context, msg []byte) error {
	line, err := s.format(msg)
	if err != nil {
		return err
	}
	frame := line
	if s.network == "tcp" {
		frame = append(strconv.AppendInt(nil, int64(len(line)), 10), ' ')
		frame = append(frame, line...)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.network == "tcp" && peerClosed(s.conn) {
		s.closeLocked()
	}
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return err
		}
	}
	return s.write(ctx, frame)
}

// Close drops the connection, if any; a later Deliver dials again.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
	return nil
}

// format builds the RFC 5424 message. Its header carries the event's own time
// and action, and a severity from its outcome, so a collector can sort and
// filter without parsing the JSON. STRUCTURED-DATA is "-": everything is in
// the JSON. The MSG has no byte-order mark, so a collector can hand it to a
// JSON parser as it is.
func (s *Syslog) format(msg []byte) ([]byte, error) {
	at, outcome, action, err := decodeHeader(msg)
	if err != nil {
		return nil, fmt.Errorf("audit: sink syslog: event is not JSON: %w", err)
	}
	if at.IsZero() {
		at = time.Now()
	}
	severity := severityInfo
	if outcome == "failure" {
		severity = severityWarning
	}

	m := &rfc5424.SyslogMessage{}
	m.SetPriority(uint8(s.cfg.Facility*8 + severity))
	m.SetVersion(1)
	// RFC 5424 allows at most six digits of a second's fraction.
	m.SetTimestamp(at.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	m.SetHostname(s.cfg.Hostname)
	m.SetAppname(s.cfg.AppName)
	m.SetProcID(s.procID)
	if action != "" {
		m.SetMsgID(action)
	}
	m.SetMessage(string(msg))
	line, err := m.String()
	if err != nil {
		return nil, fmt.Errorf("audit: sink syslog: build message: %w", err)
	}
	return []byte(line), nil
}

func (s *Syslog) dial(ctx context.Context) error {
	d := &net.Dialer{Timeout: s.cfg.DialTimeout}
	var conn net.Conn
	var err error
	if s.useTLS {
		td := &tls.Dialer{NetDialer: d, Config: s.cfg.TLS}
		conn, err = td.DialContext(ctx, "tcp", s.addr)
	} else {
		conn, err = d.DialContext(ctx, s.network, s.addr)
	}
	if err != nil {
		return fmt.Errorf("audit: sink syslog: dial %s: %w", s.cfg.URL, err)
	}
	s.conn = conn
	return nil
}

// write sends one frame under the write timeout, or less if ctx ends first.
func (s *Syslog) write(ctx context.Context, frame []byte) error {
	conn := s.conn
	deadline := time.Now().Add(s.cfg.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetWriteDeadline(deadline); err != nil {
		s.closeLocked()
		return fmt.Errorf("audit: sink syslog: %w", err)
	}

	// A cancelled ctx (the queue closing) cuts a write short at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetWriteDeadline(time.Unix(1, 0)) })
	_, err := conn.Write(frame)
	if !stop() {
		// The cut may land after the write; this connection's deadline
		// is no longer ours to trust, so the next delivery dials anew.
		s.closeLocked()
	}
	if err != nil {
		s.closeLocked()
		return fmt.Errorf("audit: sink syslog: write to %s: %w", s.cfg.URL, err)
	}
	return nil
}

func (s *Syslog) closeLocked() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}
