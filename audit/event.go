package audit

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// The event names. Each is the event.action field of one kind of log line.
const (
	ActionAuthGranted   = "auth.granted"
	ActionAuthDenied    = "auth.denied"
	ActionCommandDenied = "command.denied"
	ActionSessionStart  = "session.start"
	ActionSessionEnd    = "session.end"
	ActionTokenCreated  = "token.created"
	ActionTokenRevoked  = "token.revoked"
	ActionTokenExpiring = "token.expiring"
	ActionTokenIssued   = "token.issued"
	ActionSourceBanned  = "source.banned"
)

// Event is one structured record for the SIEM. Field names follow the
// Elastic Common Schema where it has one.
type Event struct {
	Action     string // event.action
	Outcome    string // event.outcome: success, failure or unknown
	Reason     Reason // event.reason, for denials
	Message    string // message: a short human sentence
	TokenID    string // token.id; never the secret
	User       string // user.name: the SSH user name
	SourceIP   string // source.ip
	SourcePort int    // source.port
	SessionID  string // session.id
	Fields     map[string]any
}

// Sink carries events somewhere beyond the log. Send must not block.
type Sink interface {
	Send(e Event, at time.Time)
}

// Emitter writes every event as one log line and hands it to each sink.
type Emitter struct {
	log  *logrus.Logger
	host string

	mu    sync.RWMutex
	sinks []Sink
}

// NewEmitter emits through log.
func NewEmitter(log *logrus.Logger) *Emitter {
	host, _ := os.Hostname()
	return &Emitter{log: log, host: host}
}

// AddSink registers a sink; every later event reaches it.
func (e *Emitter) AddSink(s Sink) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sinks = append(e.sinks, s)
}

// Logger is the underlying logger, for operational lines that are not events.
func (e *Emitter) Logger() *logrus.Logger { return e.log }

// Emit records one event.
func (e *Emitter) Emit(ev Event) {
	at := time.Now()
	f := ev.LogFields()
	e.mu.RLock()
	f["host.name"] = e.host
	e.mu.RUnlock()
	entry := e.log.WithFields(f).WithTime(at)
	msg := RedactTokens(ev.Message)
	if msg == "" {
		msg = ev.Action
	}
	if ev.Outcome == "failure" {
		entry.Warn(msg)
	} else {
		entry.Info(msg)
	}

	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, s := range e.sinks {
		s.Send(ev, at)
	}
}

// LogFields flattens the event into ECS-style dotted field names.
func (ev Event) LogFields() logrus.Fields {
	f := logrus.Fields{"event.action": ev.Action, "event.kind": "event"}
	set := func(k, v string) {
		if v != "" {
			f[k] = v
		}
	}
	set("event.outcome", ev.Outcome)
	set("event.reason", string(ev.Reason))
	set("token.id", ev.TokenID)
	set("user.name", ev.User)
	set("source.ip", ev.SourceIP)
	set("session.id", ev.SessionID)
	if ev.SourcePort != 0 {
		f["source.port"] = ev.SourcePort
	}
	for k, v := range ev.Fields {
		f[k] = v
	}
	for k, v := range f {
		f[k] = redactValue(v)
	}
	return f
}

// NewLogger builds the gateway's logger: JSON lines with ECS names for the
// time, level and message, or logrus's text form when format is "text".
func NewLogger(out io.Writer, format string) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(out)
	if format == "text" {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	} else {
		log.SetFormatter(&logrus.JSONFormatter{
			TimestampFormat: time.RFC3339Nano,
			FieldMap: logrus.FieldMap{
				logrus.FieldKeyTime:  "@timestamp",
				logrus.FieldKeyLevel: "log.level",
				logrus.FieldKeyMsg:   "message",
			},
		})
	}
	return log
}

// SetHost names this gateway instance in every event's host.name; it
// defaults to the machine's host name.
func (e *Emitter) SetHost(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.host = name
}
