package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

// grant is what a successful login leaves on the connection.
type grant struct {
	rec    *auth.Record
	user   string
	method string
}

// authenticate checks the token a client typed as its password (or as its
// keyboard-interactive answer). A refusal carries its reason to the client
// as an SSH banner; OpenSSH prints banners on stderr, so scripts see it.
func (s *Server) authenticate(ctx ssh.Context, meta gossh.ConnMetadata, method,
	token string) (*gossh.Permissions, error) {
	started := time.Now()
	rec, err := s.limitToken(ctx, token)
	if err == nil {
		rec, err = s.cfg.Verifier.Verify(ctx, token, meta.User())
	}
	s.cfg.Metrics.RedisCall(time.Since(started), backendFault(err))

	ev := audit.Event{User: meta.User(), Fields: map[string]any{"auth.method": method}}
	ev.SourceIP, ev.SourcePort = splitAddr(meta.RemoteAddr())
	if rec != nil {
		ev.TokenID = rec.ID
	}
	if err == nil {
		if d := s.countLogin(ctx, rec); d != nil {
			err = d
		}
	}
	if err != nil {
		var d *audit.Denial
		if !errors.As(err, &d) {
			d = audit.Deny(audit.ReasonBackendUnavailable,
				"the authentication backend is unavailable; try again shortly")
			d.Cause = err
		}
		ev.Action = audit.ActionAuthDenied
		ev.Outcome = "failure"
		ev.Reason = d.Reason
		ev.Message = d.Message
		if d.Cause != nil {
			ev.Fields["error.message"] = d.Cause.Error()
		}
		s.cfg.Events.Emit(ev)
		s.cfg.Metrics.AuthAttempt(method, "failure", string(d.Reason))
		banner := "tokengate: " + d.Message + "\n"
		if banFor, banned := s.recordFailure(ctx, meta, ev, d.Reason); banned {
			banner += "tokengate: too many failed logins: this address is banned for " +
				banFor.String() + "\n"
		}

		// Pad every refusal to the same minimum time.
		if wait := s.cfg.FailureDelay - time.Since(started); wait > 0 {
			time.Sleep(wait)
		}
		// One attempt per connection (MaxAuthTries), so the banner is
		// followed by a disconnect.
		return nil, &gossh.BannerError{Err: d, Message: banner}
	}

	// Logged in: the login deadline and the pending cap no longer apply.
	if loggedIn, ok := ctx.Value(loggedInKey).(func()); ok {
		loggedIn()
	}
	ctx.SetValue(grantKey, &grant{rec: rec, user: meta.User(), method: method})

	ev.Action = audit.ActionAuthGranted
	ev.Outcome = "success"
	ev.Message = "login with token " + rec.ID
	ev.Fields["token.scopes"] = rec.Scopes.String()
	ev.Fields["token.root"] = rec.Root
	s.cfg.Events.Emit(ev)
	s.cfg.Metrics.AuthAttempt(method, "success", "")

	go s.noteUse(rec.ID, ev.SourceIP)
	return &gossh.Permissions{Extensions: map[string]string{"token-id": rec.ID}}, nil
}

// noteUse records the last use for `token list`. It runs apart from the login
// and a failure only costs the record.
func (s *Server) noteUse(id, from string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.NoteUse(ctx, id, from, time.Now()); err != nil {
		s.cfg.Events.Logger().WithField("token.id", id).WithError(err).
			Debug("proxy: note use: failed")
	}
}
