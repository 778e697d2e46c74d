package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/gliderlabs/ssh"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

// loginLeases are this gateway's live logins as counted in Redis (see
// auth.AcquireLogin), kept so they can be renewed and released.
type loginLeases struct {
	mu      sync.Mutex
	byToken map[string]map[string]struct{}
}

func newLoginLeases() *loginLeases {
	return &loginLeases{byToken: map[string]map[string]struct{}{}}
}

func (l *loginLeases) add(id, member string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byToken[id] == nil {
		l.byToken[id] = map[string]struct{}{}
	}
	l.byToken[id][member] = struct{}{}
}

func (l *loginLeases) remove(id, member string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byToken[id], member)
	if len(l.byToken[id]) == 0 {
		delete(l.byToken, id)
	}
}

func (l *loginLeases) snapshot() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.byToken))
	for id, set := range l.byToken {
		for m := range set {
			out[id] = append(out[id], m)
		}
	}
	return out
}

// countLogin registers a granted login in Redis, refusing it when the token
// is at its --max-sessions cap, and releases it when the connection closes.
func (s *Server) countLogin(ctx ssh.Context, rec *auth.Record) *audit.Denial {
	connID, _ := ctx.Value(connIDKey).(string)
	member := s.instance + "/" + connID
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Verifier.Timeout)
	limit := rec.MaxSessions
	if limit <= 0 {
		limit = s.cfg.DefaultMaxLogins
	}
	ok, n, err := s.cfg.Store.AcquireLogin(rctx, rec.ID, member, limit, time.Now())
	cancel()
	if err != nil {
		return backendUnavailable(err)
	}
	if !ok {
		return audit.Deny(audit.ReasonSessionLimit,
			"token %s already has %d live session(s), its limit", rec.ID, n)
	}
	s.logins.add(rec.ID, member)
	context.AfterFunc(ctx, func() {
		s.logins.remove(rec.ID, member)
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.cfg.Store.ReleaseLogin(rctx, rec.ID, member)
	})
	return nil
}

// RenewLogins keeps this gateway's login leases alive until ctx ends. If the
// gateway dies its leases lapse after auth.LeaseTTL and stop counting.
func (s *Server) RenewLogins(ctx context.Context) {
	t := time.NewTicker(auth.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			members := s.logins.snapshot()
			if len(members) == 0 {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := s.cfg.Store.RenewLogins(rctx, members, time.Now()); err != nil {
				s.cfg.Events.Logger().WithError(err).Warn("proxy: logins: renew: failed")
			}
			cancel()
		}
	}
}
