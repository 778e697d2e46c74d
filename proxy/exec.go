package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gliderlabs/ssh"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/session"
)

// ExitDenied is the exit status of a session refused by policy. rsync's own
// codes stop at 35, so a script can tell a refusal from an rsync failure.
const ExitDenied = 77

// exitInternal is the status when the gateway itself failed.
const exitInternal = 70

// handleExec runs one exec request: parse, decide, jail, pump, report.
func (s *Server) handleExec(sess ssh.Session) {
	ctx := sess.Context()
	g, ok := ctx.Value(grantKey).(*grant)
	if !ok {
		// Unreachable: the handshake only completes through authenticate.
		_, _ = io.WriteString(sess.Stderr(), "tokengate: not logged in\n")
		_ = sess.Exit(ExitDenied)
		return
	}
	raw := sess.RawCommand()
	if raw == "" {
		s.refuseRequest(sess, "shell", "this gateway runs rsync only; no shell is offered")
		return
	}
	ev := connEvent(ctx)
	ev.SessionID = newSessionID()
	s.warnIfExpiring(sess, ev, g)
	if isIssueCommand(raw) {
		s.issueToken(sess, ev, g)
		return
	}

	plan, err := s.decide(sess, raw, g)
	if err != nil {
		s.refuse(sess, ev, raw, err)
		return
	}
	if s.live.Count() >= s.cfg.MaxLiveSessions {
		s.refuse(sess, ev, raw, audit.Deny(audit.ReasonSessionLimit,
			"the gateway is at its limit of %d sessions; try again later", s.cfg.MaxLiveSessions))
		return
	}

	writes := plan.Direction == session.DirectionPush || plan.Deletes
	root, err := s.prepareRoot(g.rec, writes)
	if err != nil {
		s.refuse(sess, ev, raw, err)
		return
	}
	cmd, err := s.cfg.Jail.Command(session.Spec{
		Root:      root,
		Writable:  writes,
		Argv:      plan.Argv,
		SessionID: ev.SessionID,
	})
	if err != nil {
		s.fail(sess, ev, "jail", err)
		return
	}
	s.run(sess, cmd, plan, ev, g)
}

// warnIfExpiring tells the client, and the log, when the token is in the
// last part of its life, so a script's owner renews it before a job breaks.
func (s *Server) warnIfExpiring(sess ssh.Session, ev audit.Event, g *grant) {
	now := time.Now()
	if !auth.InWarningWindow(g.rec.CreatedAt, g.rec.ExpiresAt, now, s.cfg.WarnFraction, s.cfg.WarnMax) {
		return
	}
	left := g.rec.ExpiresAt.Sub(now)
	at := g.rec.ExpiresAt.UTC().Format("2006-01-02T15:04Z")
	msg := fmt.Sprintf("token %s expires in %s (%s)", g.rec.ID, roundLeft(left), at)
	_, _ = io.WriteString(sess.Stderr(), "tokengate: warning: "+msg+"\n")
	ev.Action = audit.ActionTokenExpiring
	ev.Outcome = "unknown"
	ev.Message = msg
	ev.Fields = map[string]any{"token.expires_at": g.rec.ExpiresAt.UTC().Format(time.RFC3339),
		"token.expires_in_s": int64(left.Seconds())}
	s.cfg.Events.Emit(ev)
}

// roundLeft prints a remaining time as 5h12m, 3h or 42s.
func roundLeft(d time.Duration) string {
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	d = d.Round(time.Minute)
	h, m := d/time.Hour, (d%time.Hour)/time.Minute
	if m == 0 {
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dh%dm", h, m)
}

// prepareRoot finds, or for a transfer that writes creates, the token's
// root. A pull never creates it: a read-only token changes nothing.
func (s *Server) prepareRoot(rec *auth.Record, writes bool) (string, error) {
	if !writes {
		if _, err := os.Lstat(filepath.Join(s.cfg.DataDir, rec.Root)); errors.Is(err, fs.ErrNotExist) {
			return "", audit.Deny(audit.ReasonPathOutsideRoot,
				"token %s's root %s does not exist yet; nothing has been pushed there", rec.ID, rec.Root)
		}
	}
	uid, gid := s.cfg.Jail.RootOwner()
	root, err := session.PrepareRoot(s.cfg.DataDir, rec.Root, uid, gid)
	if err != nil {
		d := audit.Deny(audit.ReasonPathOutsideRoot,
			"token %s's root %s is not a plain directory inside the data dir", rec.ID, rec.Root)
		d.Cause = err
		return "", d
	}
	return root, nil
}

// decide parses the command (and, for `rsync -s`, the argument list the
// client sends first on stdin) and applies the token's policy.
func (s *Server) decide(sess ssh.Session, raw string, g *grant) (*session.Plan, error) {
	inv, err := session.ParseCommand(raw)
	if err != nil {
		return nil, err
	}
	if inv.Protected {
		// A client that never sends its list must not hold the session open.
		timer := time.AfterFunc(s.cfg.ProtectedArgsTimeout, func() { _ = sess.Close() })
		err := inv.ReadProtectedArgs(sess)
		timer.Stop()
		if err != nil {
			return nil, err
		}
	}
	plan, err := session.Authorize(inv, g.rec.Scopes)
	var d *audit.Denial
	if errors.As(err, &d) && d.Reason == audit.ReasonScopeMissing {
		// The policy says what is lacking; only the gateway knows whose.
		d.Message = "token " + g.rec.ID + " " + d.Message
	}
	return plan, err
}

// refuse reports a policy refusal: one line on stderr, one event, exit 77.
func (s *Server) refuse(sess ssh.Session, ev audit.Event, raw string, err error) {
	var d *audit.Denial
	if !errors.As(err, &d) {
		d = audit.Deny(audit.ReasonArgumentInvalid, "%s", err.Error())
	}
	ev.Action = audit.ActionCommandDenied
	ev.Outcome = "failure"
	ev.Reason = d.Reason
	ev.Message = d.Message
	ev.Fields = map[string]any{"ssh.command": clip(raw, 512)}
	if d.Cause != nil {
		ev.Fields["error.message"] = d.Cause.Error()
	}
	s.cfg.Events.Emit(ev)
	_, _ = io.WriteString(sess.Stderr(), "tokengate: "+d.Message+"\n")
	_ = sess.Exit(ExitDenied)
}

// fail reports a fault of the gateway itself: the detail goes to the log,
// the client gets the session ID to quote to an admin.
func (s *Server) fail(sess ssh.Session, ev audit.Event, step string, err error) {
	s.cfg.Events.Logger().WithFields(ev.LogFields()).WithError(err).
		Error("proxy: session: " + step + ": failed")
	_, _ = fmt.Fprintf(sess.Stderr(), "tokengate: internal error (session %s)\n", ev.SessionID)
	_ = sess.Exit(exitInternal)
}

// run starts the jailed rsync and pumps bytes both ways until it exits, the
// client goes away, or the session is cut.
func (s *Server) run(sess ssh.Session, cmd *exec.Cmd, plan *session.Plan, ev audit.Event,
	g *grant) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		s.fail(sess, ev, "stdin pipe", err)
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.fail(sess, ev, "stdout pipe", err)
		return
	}
	cmd.Stderr = sess.Stderr()

	started := time.Now()
	err = cmd.Start()
	// The child holds its own copies of the extra files (the jail's spec).
	for _, f := range cmd.ExtraFiles {
		_ = f.Close()
	}
	if err != nil {
		s.fail(sess, ev, "start rsync", err)
		return
	}

	// Ending rsync: SIGTERM first, so it removes its temporary file rather
	// than leave a half-written one beside the original; SIGKILL after a
	// grace period in case it does not. rsync is PID 1 of its namespace, so
	// its death takes every other process of the jail with it.
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			time.AfterFunc(stopGrace, func() { _ = cmd.Process.Kill() })
		})
	}
	var cutMsg atomic.Pointer[string]
	live := &liveSession{id: ev.SessionID, tokenID: ev.TokenID, cut: func(msg string) {
		if cutMsg.CompareAndSwap(nil, &msg) {
			_, _ = io.WriteString(sess.Stderr(), "tokengate: "+msg+"\n")
			stop()
		}
	}}
	s.live.add(live)
	defer s.live.remove(live)

	direction := "push"
	if plan.Direction == session.DirectionPull {
		direction = "pull"
	}
	start := ev
	start.Action = audit.ActionSessionStart
	start.Outcome = "success"
	start.Message = "rsync " + direction + " started"
	start.Fields = map[string]any{"rsync.direction": direction, "rsync.args": plan.Argv[1:]}
	if len(plan.Stdin) > 0 {
		// With -s (and for wildcard pulls) the paths travel on stdin.
		list := strings.Split(strings.TrimRight(string(plan.Stdin), "\x00"), "\x00")
		start.Fields["rsync.stdin_args"] = list[1:]
	}
	s.cfg.Events.Emit(start)
	s.cfg.Metrics.SessionStarted()

	// Bound the session's life, and with CutOnExpiry its token's expiry.
	lifetime := time.AfterFunc(s.cfg.MaxSessionLifetime, func() {
		live.cut("session reached the maximum lifetime of " + s.cfg.MaxSessionLifetime.String())
	})
	defer lifetime.Stop()
	if s.cfg.CutOnExpiry {
		expiry := time.AfterFunc(time.Until(g.rec.ExpiresAt), func() {
			live.cut("token " + g.rec.ID + " expired")
		})
		defer expiry.Stop()
	}

	// The client going away (TCP closed) ends rsync at once; a session
	// that moves no byte either way for IdleTimeout is cut.
	var lastActive atomic.Int64
	lastActive.Store(time.Now().UnixNano())
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(idleCheckEvery(s.cfg.IdleTimeout))
		defer tick.Stop()
		for {
			select {
			case <-sess.Context().Done():
				stop()
				return
			case <-done:
				return
			case now := <-tick.C:
				if now.Sub(time.Unix(0, lastActive.Load())) >= s.cfg.IdleTimeout {
					live.cut("session idle for " + s.cfg.IdleTimeout.String())
				}
			}
		}
	}()

	var bytesIn, bytesOut int64
	var pumps sync.WaitGroup
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		defer stdin.Close()
		if len(plan.Stdin) > 0 {
			if _, err := stdin.Write(plan.Stdin); err != nil {
				return
			}
		}
		bytesIn = copyCounting(stdin, sess, &lastActive)
	}()
	bytesOut = copyCounting(sess, stdout, &lastActive)
	_ = cmd.Wait() // the status is read from ProcessState below

	code := exitCode(cmd)
	cut := cutMsg.Load()
	if cut != nil {
		code = ExitDenied
	}
	// Closing the channel ends the stdin pump's read.
	_ = sess.Exit(code)
	pumps.Wait()

	end := ev
	end.Action = audit.ActionSessionEnd
	end.Outcome = "success"
	end.Message = fmt.Sprintf("rsync %s ended with status %d", direction, code)
	if code != 0 {
		end.Outcome = "failure"
	}
	if cut != nil {
		end.Reason = audit.ReasonSessionCut
		end.Message = "session cut: " + *cut
	}
	end.Fields = map[string]any{
		"rsync.direction": direction,
		"rsync.exit_code": code,
		"bytes.in":        bytesIn,
		"bytes.out":       bytesOut,
		"event.duration":  time.Since(started).Nanoseconds(),
	}
	s.cfg.Events.Emit(end)
	s.cfg.Metrics.SessionEnded(time.Since(started), bytesIn, bytesOut)
}

// copyCounting copies until EOF or error and returns the bytes moved. The
// buffer is large because rsync streams big blocks and each SSH channel
// write is a packet; fewer, larger writes cost less.
func copyCounting(dst io.Writer, src io.Reader, active *atomic.Int64) int64 {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			active.Store(time.Now().UnixNano())
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil || w < n {
				return total
			}
		}
		if rerr != nil {
			return total
		}
	}
}

// stopGrace is how long rsync gets to clean up after SIGTERM.
const stopGrace = time.Second

// idleCheckEvery is how often the idle timer looks: often enough that a
// session is cut within a few percent of the timeout.
func idleCheckEvery(idle time.Duration) time.Duration {
	every := idle / 20
	if every < 100*time.Millisecond {
		every = 100 * time.Millisecond
	}
	if every > time.Minute {
		every = time.Minute
	}
	return every
}

func exitCode(cmd *exec.Cmd) int {
	st := cmd.ProcessState
	if st == nil {
		return exitInternal
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := st.ExitCode(); code >= 0 {
		return code
	}
	return exitInternal
}

func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
