package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/metrics"
	"github.com/tokengate/tokengate/proxy"
	"github.com/tokengate/tokengate/session"
)

// serveOptions are the gateway's settings, shared by `serve` and `dev`.
type serveOptions struct {
	listen         string
	redisURL       string
	redisTimeout   time.Duration
	dataDir        string
	stateDir       string
	rsyncPath      string
	jailUID        uint
	jailGID        uint
	insecureNoJail bool
	logFormat      string
	loginGrace     time.Duration
	recheck        time.Duration
	maxLifetime    time.Duration
	maxLive        int
	defaultLogins  int
	idleTimeout    time.Duration
	cutOnExpiry    bool
	warnFraction   float64
	warnMax        time.Duration
	ops            bool
	opsListen      string
	limiter        limiterOptions
	sinks          sinkOptions
	name           string
	proxyFrom      string
	maxPending     int
	maxPendingSrc  int
	ciphers        string

	// jail, when set (by dev, which had to build one to know whether it
	// can), is used instead of building another.
	jail *session.Jail
}

func (o *serveOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.listen, "listen", ":2222", "address to accept SSH connections on")
	fs.StringVar(&o.dataDir, "data-dir", "/var/lib/tokengate/data", "tokens' roots live below this directory")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/tokengate/state", "host key and other state")
	fs.StringVar(&o.rsyncPath, "rsync", "/usr/bin/rsync", "the rsync binary run in the jail (3.4.0 or newer)")
	fs.UintVar(&o.jailUID, "jail-uid", 64050, "unprivileged uid jailed rsync runs as")
	fs.UintVar(&o.jailGID, "jail-gid", 64050, "unprivileged gid jailed rsync runs as")
	fs.BoolVar(&o.insecureNoJail, "insecure-no-jail", false, "DEVELOPMENT ONLY: run rsync unconfined")
	fs.StringVar(&o.logFormat, "log-format", "json", "json, or text for a terminal")
	fs.DurationVar(&o.loginGrace, "login-grace", proxy.DefaultLoginGrace, "time allowed from connect to login")
	fs.DurationVar(&o.recheck, "revocation-recheck", 500*time.Millisecond,
		"how often live sessions' tokens are re-checked in Redis")
	fs.DurationVar(&o.maxLifetime, "max-session-lifetime", proxy.DefaultMaxSessionLifetime,
		"no session runs longer than this")
	fs.IntVar(&o.maxLive, "max-live-sessions", proxy.DefaultMaxLiveSessions,
		"sessions this gateway runs at once")
	fs.IntVar(&o.defaultLogins, "default-max-sessions", proxy.DefaultMaxLoginsPerToken,
		"concurrent logins of a token that sets no --max-sessions of its own")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", proxy.DefaultIdleTimeout,
		"cut a session that moves no byte either way for this long")
	fs.BoolVar(&o.cutOnExpiry, "cut-on-expiry", false,
		"end live sessions when their token expires (default: they run on, up to --max-session-lifetime)")
	fs.Float64Var(&o.warnFraction, "expiry-warning-fraction", proxy.DefaultWarnFraction,
		"warn clients during this last fraction of a token's lifetime")
	fs.DurationVar(&o.warnMax, "expiry-warning-max", proxy.DefaultWarnMax,
		"the expiry warning window is never longer than this")
	fs.BoolVar(&o.ops, "ops", false, "serve /metrics, /healthz and /readyz on --ops-listen")
	fs.StringVar(&o.opsListen, "ops-listen", "127.0.0.1:9222", "address of the ops listener")
	o.limiter.register(fs)
	o.sinks.register(fs)
	fs.StringVar(&o.name, "name", hostName(), "this gateway's name in events (host.name)")
	fs.IntVar(&o.maxPending, "max-pending", proxy.DefaultMaxPending,
		"connections still logging in, in all")
	fs.IntVar(&o.maxPendingSrc, "max-pending-per-source", proxy.DefaultMaxPendingPerSource,
		"connections still logging in from one address (allow-listed networks: only --max-pending)")
	fs.StringVar(&o.ciphers, "ciphers", "",
		"comma-separated SSH ciphers to offer instead of the default (AES-GCM on AES-capable CPUs)")
	fs.StringVar(&o.proxyFrom, "proxy-protocol-from", "",
		"comma-separated networks of load balancers that must send a PROXY protocol header")
	registerRedis(fs, &o.redisURL, &o.redisTimeout)
}

func registerRedis(fs *flag.FlagSet, url *string, timeout *time.Duration) {
	fs.StringVar(url, "redis", "redis://127.0.0.1:6379/0", "Redis URL (redis:// or rediss://)")
	fs.DurationVar(timeout, "redis-timeout", 2*time.Second, "bound on every Redis call")
	fs.String("config", "", "config file: one `flag value` per line")
}

// newRedis connects lazily: a gateway starts even while Redis is down and
// refuses logins until it is back.
func newRedis(url string, timeout time.Duration) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("--redis: %w", err)
	}
	opt.DialTimeout = timeout
	opt.ReadTimeout = timeout
	opt.WriteTimeout = timeout
	opt.MaxRetries = 1
	return redis.NewClient(opt), nil
}

func serveCommand() *ffcli.Command { return newServeCommand(&serveOptions{}) }

func newServeCommand(o *serveOptions) *ffcli.Command {
	fs := flag.NewFlagSet("gateway serve", flag.ContinueOnError)
	o.register(fs)
	return &ffcli.Command{
		Name:       "serve",
		ShortUsage: "gateway serve [flags]",
		ShortHelp:  "run the SSH gateway",
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("serve takes no arguments (got %q)", args[0])
			}
			return serve(ctx, o, nil)
		},
	}
}

// jailConfig is the jail these settings describe.
func (o *serveOptions) jailConfig() session.JailConfig {
	return session.JailConfig{
		RsyncPath: o.rsyncPath,
		StateDir:  o.stateDir,
		UID:       uint32(o.jailUID),
		GID:       uint32(o.jailGID),
		Insecure:  o.insecureNoJail,
		// The process limit counts every session's rsync together (they
		// share the jail uid); a session runs at most three.
		MaxProcs: uint64(4*max(o.maxLive, 1) + 64),
	}
}

// validate refuses settings that would switch a limit off by accident.
func (o *serveOptions) validate() error {
	positive := map[string]time.Duration{
		"--redis-timeout": o.redisTimeout, "--login-grace": o.loginGrace,
		"--revocation-recheck": o.recheck, "--max-session-lifetime": o.maxLifetime,
		"--idle-timeout": o.idleTimeout, "--expiry-warning-max": o.warnMax,
	}
	for _, name := range []string{"--redis-timeout", "--login-grace", "--revocation-recheck",
		"--max-session-lifetime", "--idle-timeout", "--expiry-warning-max"} {
		if positive[name] <= 0 {
			return fmt.Errorf("%s must be positive (got %v)", name, positive[name])
		}
	}
	switch {
	case o.maxPending < 1 || o.maxPendingSrc < 1:
		return fmt.Errorf("--max-pending and --max-pending-per-source must be at least 1")
	case o.maxLive < 1:
		return fmt.Errorf("--max-live-sessions must be at least 1 (got %d)", o.maxLive)
	case o.defaultLogins < 1:
		return fmt.Errorf("--default-max-sessions must be at least 1 (got %d)", o.defaultLogins)
	case o.warnFraction <= 0 || o.warnFraction > 1:
		return fmt.Errorf("--expiry-warning-fraction must be in (0, 1] (got %v)", o.warnFraction)
	case o.logFormat != "json" && o.logFormat != "text":
		return fmt.Errorf("--log-format must be json or text (got %q)", o.logFormat)
	}
	return nil
}

// serve runs the gateway until ctx ends. ready, if set, is called once the
// listener accepts connections.
func serve(ctx context.Context, o *serveOptions, ready func(addr net.Addr, key gossh.PublicKey)) error {
	if err := o.validate(); err != nil {
		return err
	}
	// x/crypto/ssh allocates a buffer per 32 KiB packet; collecting less
	// often cut the gateway's CPU per GiB pushed by a fifth (bench/). GOGC
	// in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	log := audit.NewLogger(os.Stdout, o.logFormat)
	redis.SetLogger(redisLog{log})
	events := audit.NewEmitter(log)

	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	rdb, err := newRedis(o.redisURL, o.redisTimeout)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := auth.NewStore(rdb)

	if o.insecureNoJail {
		log.WithField("event.action", "jail.disabled").
			Warn("serve: jail: DISABLED by --insecure-no-jail; rsync runs unconfined; never do this in production")
	}
	jail := o.jail
	if jail == nil {
		if jail, err = session.NewJail(o.jailConfig()); err != nil {
			return err
		}
	}
	signer, err := proxy.LoadOrCreateHostKey(o.stateDir)
	if err != nil {
		return err
	}

	limiter, err := o.limiter.build(rdb)
	if err != nil {
		return err
	}
	allow, err := parseNetworks(o.limiter.allow)
	if err != nil {
		return fmt.Errorf("--allow-networks: %w", err)
	}
	var ciphers []string
	if o.ciphers != "" {
		ciphers = strings.Split(o.ciphers, ",")
		for _, c := range ciphers {
			if !slices.Contains(gossh.SupportedAlgorithms().Ciphers, c) {
				return fmt.Errorf("--ciphers: %q is not a supported cipher (supported: %s)",
					c, strings.Join(gossh.SupportedAlgorithms().Ciphers, ", "))
			}
		}
	}
	m := metrics.New()
	events.SetHost(o.name)
	flushSinks, err := o.sinks.attach(events, rdb, o.name, m, log)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		flushSinks(ctx)
	}()
	srv := proxy.New(proxy.Config{
		Limiter: limiter,
		// Token IDs are public; refusing an ID after failures lets anyone
		// lock its owner out, so it is opt-in.
		LimitTokenIDs: o.limiter.tokenThreshold > 0,
		Metrics:       m,
		HostSigner:    signer,
		Verifier:      &auth.Verifier{Store: store, Timeout: o.redisTimeout},
		Store:         store,
		Jail:          jail,
		Events:        events,
		DataDir:       dataDir,
		LoginGrace:    o.loginGrace,

		MaxPending:          o.maxPending,
		MaxPendingPerSource: o.maxPendingSrc,
		AllowNetworks:       allow,
		Ciphers:             ciphers,
		MaxSessionLifetime:  o.maxLifetime,
		MaxLiveSessions:     o.maxLive,
		DefaultMaxLogins:    o.defaultLogins,
		IdleTimeout:         o.idleTimeout,
		CutOnExpiry:         o.cutOnExpiry,
		WarnFraction:        o.warnFraction,
		WarnMax:             o.warnMax,
	})
	trusted, err := parseNetworks(o.proxyFrom)
	if err != nil {
		return fmt.Errorf("--proxy-protocol-from: %w", err)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if len(trusted) > 0 {
		ln = proxy.TrustProxyHeaders(ln, trusted, o.loginGrace)
	}

	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	feed := &auth.Feed{Store: store, Interval: o.recheck, Log: log}
	go feed.Run(feedCtx, srv.Live().Tokens, func(id string, st auth.State) {
		m.SessionsCut(cutInvalid(srv, events, id, st, o.cutOnExpiry))
	})
	go srv.RenewLogins(feedCtx)
	go countExpiring(feedCtx, store, m, o.warnFraction, o.warnMax)
	if o.ops {
		ready := func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
		go func() {
			if err := metrics.Serve(feedCtx, o.opsListen, m, ready, log); err != nil {
				log.WithError(err).Error("serve: ops listener: failed")
			}
		}()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.WithFields(map[string]any{
		"event.action":     "gateway.ready",
		"server.address":   ln.Addr().String(),
		"host.fingerprint": gossh.FingerprintSHA256(signer.PublicKey()),
	}).Info("serve: listen: ready")
	if ready != nil {
		ready(ln.Addr(), signer.PublicKey())
	}

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.WithField("event.action", "gateway.stopping").Info("serve: shutdown: started")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// cutInvalid ends the live sessions of a token that stopped being valid.
// Unless cutOnExpiry is set, an expired token's sessions run on: they were
// authorised before the expiry, and --max-session-lifetime bounds them.
func cutInvalid(srv *proxy.Server, events *audit.Emitter, id string, st auth.State,
	cutOnExpiry bool) int {
	msg := "token " + id + " was revoked"
	switch {
	case st == auth.StateExpired && cutOnExpiry:
		msg = "token " + id + " expired"
	case st != auth.StateRevoked:
		return 0
	}
	cut := srv.Live().Cut(id, msg)
	if len(cut) == 0 {
		return 0
	}
	events.Emit(audit.Event{
		Action:  audit.ActionTokenRevoked,
		Outcome: "success",
		Reason:  audit.ReasonSessionCut,
		TokenID: id,
		Message: fmt.Sprintf("%s; %d live session(s) cut", msg, len(cut)),
		Fields:  map[string]any{"session.ids": cut},
	})
	return len(cut)
}

// countExpiring keeps the tokens-expiring gauge current, so an alert can
// fire before a script's token runs out.
func countExpiring(ctx context.Context, store *auth.Store, m *metrics.Metrics,
	fraction float64, max time.Duration) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := store.CountExpiring(rctx, time.Now(), fraction, max)
		cancel()
		if err == nil {
			m.SetTokensExpiring(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

// redisLog sends go-redis's own messages (dial retries and the like) to the
// gateway's logger at debug level, instead of bare lines on stderr that would
// break a JSON log; every Redis failure that matters is already an event.
type redisLog struct{ log *logrus.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	if r.log == nil {
		return
	}
	r.log.WithField("event.action", "redis.client").Debugf("redis: "+format, v...)
}
