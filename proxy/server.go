// Package proxy is the SSH front door: it accepts connections, holds the
// handshake to a deadline, checks tokens, refuses everything that is not an
// rsync exec, and runs each accepted exec through the session package.
package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/metrics"
	"github.com/tokengate/tokengate/session"
)

// Config is what the front door needs. Zero durations take the defaults below.
type Config struct {
	HostSigner gossh.Signer
	Verifier   *auth.Verifier
	Store      *auth.Store
	Jail       *session.Jail
	Events     *audit.Emitter
	// Limiter scores failed logins and bans sources; nil disables it.
	Limiter *auth.Limiter
	// LimitTokenIDs also refuses a token ID that failed too often.
	LimitTokenIDs bool
	// Metrics may be nil.
	Metrics *metrics.Metrics

	DataDir string // tokens' roots live below it

	// LoginGrace bounds the time from TCP accept to a finished login.
	LoginGrace time.Duration
	// MaxPending and MaxPendingPerSource cap the connections that are still
	// logging in, in all and from one address, as sshd's MaxStartups does.
	MaxPending          int
	MaxPendingPerSource int
	// AllowNetworks are held to MaxPending only, not the per-source cap:
	// a trusted relay or NAT may carry many clients.
	AllowNetworks []netip.Prefix
	// FailureDelay pads every refused login to at least this long, so the
	// time to answer does not tell an unknown token from a wrong secret.
	// Zero takes the default; negative turns the padding off.
	FailureDelay time.Duration
	// MaxSessionsPerConn caps concurrent channels on one SSH connection.
	MaxSessionsPerConn int
	// MaxLiveSessions caps the sessions this gateway runs at once.
	MaxLiveSessions int
	// DefaultMaxLogins caps the concurrent logins of a token that sets no
	// --max-sessions of its own, so that one token cannot take every
	// session the gateway (and the jail uid's process limit) allows.
	DefaultMaxLogins int
	// ProtectedArgsTimeout bounds the wait for an `rsync -s` client's argument list.
	ProtectedArgsTimeout time.Duration
	// Ciphers, when set, replaces the default cipher list.
	Ciphers []string

	// MaxSessionLifetime bounds every session, whatever its token's expiry.
	MaxSessionLifetime time.Duration
	// IdleTimeout cuts a session that moves no byte either way this long.
	IdleTimeout time.Duration
	// CutOnExpiry ends live sessions when their token expires, as a
	// revocation does. By default a session authorised before the expiry
	// runs on, bounded by MaxSessionLifetime.
	CutOnExpiry bool
	// WarnFraction and WarnMax set the expiry warning window: the last
	// WarnFraction of a token's lifetime, at most WarnMax.
	WarnFraction float64
	WarnMax      time.Duration
}

// Defaults for Config's zero values.
const (
	DefaultMaxSessionLifetime  = 24 * time.Hour
	DefaultIdleTimeout         = time.Hour
	DefaultWarnFraction        = 0.2
	DefaultWarnMax             = 72 * time.Hour
	DefaultLoginGrace          = 30 * time.Second
	DefaultMaxPending          = 256
	DefaultMaxPendingPerSource = 32
	DefaultFailureDelay        = 250 * time.Millisecond
	DefaultMaxSessionsPerConn  = 4
	DefaultMaxLiveSessions     = 1000
	DefaultMaxLoginsPerToken   = 32
)

// Server is one SSH listener with its live sessions.
type Server struct {
	cfg      Config
	ssh      *ssh.Server
	live     *Registry
	logins   *loginLeases
	pending  *pendingLogins
	instance string
}

type ctxKey int

const (
	grantKey ctxKey = iota
	netConnKey
	loggedInKey
	connIDKey
	semKey
	ptyKey
)

// New builds a server; Serve starts it.
func New(cfg Config) *Server {
	if cfg.LoginGrace <= 0 {
		cfg.LoginGrace = DefaultLoginGrace
	}
	switch {
	case cfg.FailureDelay == 0:
		cfg.FailureDelay = DefaultFailureDelay
	case cfg.FailureDelay < 0:
		cfg.FailureDelay = 0
	}
	orDefault(&cfg.MaxSessionsPerConn, DefaultMaxSessionsPerConn)
	orDefault(&cfg.ProtectedArgsTimeout, 30*time.Second)
	orDefault(&cfg.MaxSessionLifetime, DefaultMaxSessionLifetime)
	orDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	orDefault(&cfg.WarnFraction, DefaultWarnFraction)
	orDefault(&cfg.WarnMax, DefaultWarnMax)
	orDefault(&cfg.MaxLiveSessions, DefaultMaxLiveSessions)
	orDefault(&cfg.DefaultMaxLogins, DefaultMaxLoginsPerToken)
	orDefault(&cfg.MaxPending, DefaultMaxPending)
	orDefault(&cfg.MaxPendingPerSource, DefaultMaxPendingPerSource)
	s := &Server{cfg: cfg, live: NewRegistry(), logins: newLoginLeases(), instance: newSessionID(),
		pending: newPendingLogins(cfg.MaxPending, cfg.MaxPendingPerSource, cfg.AllowNetworks)}
	s.ssh = &ssh.Server{
		Version:                  "tokengate",
		HostSigners:              []ssh.Signer{cfg.HostSigner},
		Handler:                  s.handleExec,
		ConnCallback:             s.onConnect,
		ServerConfigCallback:     s.serverConfig,
		ConnectionFailedCallback: s.connectionFailed,
		SubsystemHandlers:        map[string]ssh.SubsystemHandler{"default": s.refuseSubsystem},
		ChannelHandlers: map[string]ssh.ChannelHandler{
			"session": s.sessionChannel,
			"default": s.refuseChannel,
		},
		RequestHandlers: map[string]ssh.RequestHandler{
			"default": s.refuseGlobalRequest,
		},
	}
	return s
}

// orDefault replaces a zero or negative setting with its default.
func orDefault[T int | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Live is the registry of running sessions, for the revocation feed.
func (s *Server) Live() *Registry { return s.live }

// Serve accepts connections on l until Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	err := s.ssh.Serve(l)
	if errors.Is(err, ssh.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, ends every live session, and waits for the
// connections to close or ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.live.CutAll("the gateway is shutting down")
	err := s.ssh.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return s.ssh.Close()
	}
	return err
}

// onConnect closes connections from banned sources before the handshake,
// caps the connections still logging in, and starts the login deadline: a
// client that has not finished logging in within LoginGrace is dropped.
// A timer is used rather than a socket deadline because gliderlabs resets
// socket deadlines on every read and write.
func (s *Server) onConnect(ctx ssh.Context, conn net.Conn) net.Conn {
	if s.banned(ctx, conn.RemoteAddr()) {
		return nil
	}
	release, ok := s.pending.enter(conn.RemoteAddr())
	if !ok {
		s.cfg.Events.Logger().WithField("source.ip", conn.RemoteAddr().String()).
			Warn("proxy: connect: too many connections still logging in; dropped")
		return nil
	}
	grace := time.AfterFunc(s.cfg.LoginGrace, func() {
		s.cfg.Events.Logger().WithField("source.ip", conn.RemoteAddr().String()).
			Info("proxy: connect: login grace expired; closed")
		_ = conn.Close()
	})
	conn, quickAckDone := withQuickAck(conn)
	var once sync.Once
	loggedIn := func() {
		once.Do(func() {
			grace.Stop()
			release()
			quickAckDone()
		})
	}
	context.AfterFunc(ctx, loggedIn)
	ctx.SetValue(loggedInKey, loggedIn)
	ctx.SetValue(netConnKey, conn)
	ctx.SetValue(connIDKey, newSessionID())
	ctx.SetValue(semKey, make(chan struct{}, s.cfg.MaxSessionsPerConn))
	return conn
}

// serverConfig installs our own auth callbacks on x/crypto's config rather
// than gliderlabs' boolean handlers, because only an error return can carry
// the refusal reason to the client as an SSH banner. Since gliderlabs then
// sees no handler of its own it turns on NoClientAuth; NoClientAuthCallback
// below refuses the "none" method, which keeps every login token-checked.
func (s *Server) serverConfig(ctx ssh.Context) *gossh.ServerConfig {
	cfg := &gossh.ServerConfig{
		// One token per connection. A token that was refused cannot work on
		// a second try, and OpenSSH would otherwise ask SSH_ASKPASS up to six
		// times, each a failure scored towards a ban. The refusal's banner
		// still reaches the client before the disconnect.
		MaxAuthTries: 1,
		PasswordCallback: func(meta gossh.ConnMetadata, password []byte) (*gossh.Permissions, error) {
			return s.authenticate(ctx, meta, "password", string(password))
		},
		KeyboardInteractiveCallback: func(meta gossh.ConnMetadata,
			challenge gossh.KeyboardInteractiveChallenge) (*gossh.Permissions, error) {
			answers, err := challenge("", "", []string{"Password: "}, []bool{false})
			if err != nil {
				return nil, err
			}
			if len(answers) != 1 {
				return nil, errors.New("expected exactly one answer")
			}
			return s.authenticate(ctx, meta, "keyboard-interactive", answers[0])
		},
		NoClientAuthCallback: func(gossh.ConnMetadata) (*gossh.Permissions, error) {
			return nil, errors.New("a token is required")
		},
		AuthLogCallback: func(meta gossh.ConnMetadata, method string, err error) {
			s.methodRefused(meta, method, err)
		},
	}
	cfg.Ciphers = s.cfg.Ciphers
	if len(cfg.Ciphers) == 0 {
		cfg.Ciphers = DefaultCiphers()
	}
	return cfg
}

// sessionChannel caps the sessions on one connection, then hands the channel
// to gliderlabs with the requests we never honour filtered out.
func (s *Server) sessionChannel(srv *ssh.Server, conn *gossh.ServerConn,
	newChan gossh.NewChannel, ctx ssh.Context) {
	sem, _ := ctx.Value(semKey).(chan struct{})
	select {
	case sem <- struct{}{}:
		defer func() { <-sem }()
	default:
		s.emitRequestDenied(ctx, "session", "too many sessions on one connection")
		_ = newChan.Reject(gossh.ResourceShortage, "too many sessions on this connection")
		return
	}
	ssh.DefaultSessionHandler(srv, conn, &filteredChannel{NewChannel: newChan, s: s, ctx: ctx}, ctx)
}

// refuseChannel rejects port forwarding and every other channel type.
func (s *Server) refuseChannel(_ *ssh.Server, _ *gossh.ServerConn,
	newChan gossh.NewChannel, ctx ssh.Context) {
	s.emitRequestDenied(ctx, newChan.ChannelType(), "channel type not offered")
	_ = newChan.Reject(gossh.Prohibited, "tokengate: only rsync sessions are offered")
}

// refuseGlobalRequest answers no to remote forwarding and the like. Keepalives
// are answered no as well, which is what OpenSSH clients expect.
func (s *Server) refuseGlobalRequest(ctx ssh.Context, _ *ssh.Server,
	req *gossh.Request) (bool, []byte) {
	switch req.Type {
	case "tcpip-forward", "streamlocal-forward@openssh.com":
		s.emitRequestDenied(ctx, req.Type, "forwarding is not offered")
	}
	return false, nil
}

// refuseSubsystem answers every subsystem (sftp included). The request is
// accepted and then ended with one line and a non-zero status: a plain "no"
// makes OpenSSH exit before it prints anything we sent.
func (s *Server) refuseSubsystem(sess ssh.Session) {
	name := strconv.Quote(sess.Subsystem())
	s.refuseRequest(sess, "subsystem "+name, "subsystem "+name+" is not offered; use rsync -e ssh")
}

// refuseRequest ends an accepted shell or subsystem request with one line.
func (s *Server) refuseRequest(sess ssh.Session, what, msg string) {
	if asked, _ := sess.Context().Value(ptyKey).(bool); asked {
		what += " with pty"
	}
	s.emitRequestDenied(sess.Context(), what, msg)
	_, _ = sess.Stderr().Write([]byte("tokengate: " + msg + "\n"))
	_ = sess.Exit(ExitDenied)
}

func (s *Server) emitRequestDenied(ctx ssh.Context, what, msg string) {
	ev := connEvent(ctx)
	ev.Action = audit.ActionCommandDenied
	ev.Outcome = "failure"
	ev.Reason = audit.ReasonRequestForbidden
	ev.Message = msg
	ev.Fields = map[string]any{"ssh.request": what}
	s.cfg.Events.Emit(ev)
}

// filteredChannel drops, with a "no", the session requests that could hand
// the client anything beyond rsync: agent and X11 forwarding, and env (no
// client variable ever reaches rsync).
type filteredChannel struct {
	gossh.NewChannel
	s   *Server
	ctx ssh.Context
}

func (f *filteredChannel) Accept() (gossh.Channel, <-chan *gossh.Request, error) {
	ch, reqs, err := f.NewChannel.Accept()
	if err != nil {
		return ch, reqs, err
	}
	out := make(chan *gossh.Request)
	go func() {
		defer close(out)
		for req := range reqs {
			switch req.Type {
			case "pty-req":
				// Answered yes but never allocated: `ssh -tt` closes the
				// session on a "no" before it prints anything we say, so
				// the refusal comes with the shell request instead, where
				// the client shows our line. An exec runs without a pty.
				f.ctx.SetValue(ptyKey, true)
				_ = req.Reply(true, nil)
				continue
			case "auth-agent-req@openssh.com", "x11-req":
				f.s.emitRequestDenied(f.ctx, req.Type, "forwarding is not offered")
				fallthrough
			case "env":
				if req.WantReply {
					_ = req.Reply(false, nil)
				}
				continue
			}
			out <- req
		}
	}()
	return ch, out, nil
}

// connEvent fills the fields every event about a connection carries. It
// reads the context defensively: before the handshake ends gliderlabs has not
// stored the user name or addresses yet.
func connEvent(ctx ssh.Context) audit.Event {
	var ev audit.Event
	if g, ok := ctx.Value(grantKey).(*grant); ok {
		ev.TokenID = g.rec.ID
		ev.User = g.user
	} else if user, ok := ctx.Value(ssh.ContextKeyUser).(string); ok {
		ev.User = user
	}
	if conn, ok := ctx.Value(netConnKey).(net.Conn); ok {
		ev.SourceIP, ev.SourcePort = splitAddr(conn.RemoteAddr())
	}
	return ev
}

func splitAddr(addr net.Addr) (string, int) {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String(), tcp.Port
	}
	if addr == nil {
		return "", 0
	}
	host, port, _ := net.SplitHostPort(addr.String())
	n, _ := strconv.Atoi(port)
	return host, n
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
