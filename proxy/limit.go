package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

// limiterTimeout bounds each limiter call: a quarter of the Redis timeout,
// so that a login against a Redis that accepts but never answers is refused
// within about one and a half --redis-timeout in all. The limiter guards
// against guessing; when Redis is slow the token lookup refuses the login
// anyway, so a limiter that cannot answer lets the attempt through to it.
func (s *Server) limiterTimeout() time.Duration {
	t := s.cfg.Verifier.Timeout / 4
	return min(max(t, 50*time.Millisecond), time.Second)
}

// banned reports whether a connection comes from a banned source.
func (s *Server) banned(ctx context.Context, addr net.Addr) bool {
	ip, ok := addrIP(addr)
	if s.cfg.Limiter == nil || !ok {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, s.limiterTimeout())
	defer cancel()
	banned, _, err := s.cfg.Limiter.Banned(rctx, ip)
	return err == nil && banned
}

// limitToken refuses a well-formed token whose ID has failed too often,
// before its record is even read.
func (s *Server) limitToken(ctx context.Context, token string) (*auth.Record, error) {
	if s.cfg.Limiter == nil || !s.cfg.LimitTokenIDs {
		return nil, nil
	}
	tok, err := auth.ParseToken(token)
	if err != nil {
		return nil, nil // Verify refuses it with the right reason.
	}
	rctx, cancel := context.WithTimeout(ctx, s.limiterTimeout())
	defer cancel()
	limited, err := s.cfg.Limiter.TokenLimited(rctx, tok.ID)
	if err != nil || !limited {
		return nil, nil
	}
	return &auth.Record{ID: tok.ID}, audit.Deny(audit.ReasonRateLimited,
		"too many failed attempts with token %s; try again later", tok.ID)
}

// countedReasons are the refusals that may be guessing. A busy backend or a
// session cap is not the client's fault and is never scored.
var countedReasons = map[audit.Reason]bool{
	audit.ReasonTokenMalformed: true, audit.ReasonTokenUnknown: true,
	audit.ReasonSecretMismatch: true, audit.ReasonTokenExpired: true,
	audit.ReasonTokenRevoked: true, audit.ReasonTokenNotYetValid: true,
	audit.ReasonTokenUsed: true, audit.ReasonUserMismatch: true,
	audit.ReasonRateLimited: true,
}

// recordFailure scores a failed login and reports whether it banned the
// source, and for how long. The ban is announced by exactly one
// source.banned event.
func (s *Server) recordFailure(ctx context.Context, meta gossh.ConnMetadata, ev audit.Event,
	reason audit.Reason) (time.Duration, bool) {
	ip, ok := addrIP(meta.RemoteAddr())
	if s.cfg.Limiter == nil || !ok || !countedReasons[reason] {
		return 0, false
	}
	rctx, cancel := context.WithTimeout(ctx, s.limiterTimeout())
	defer cancel()
	tokenID := ""
	if auth.ValidID(ev.TokenID) {
		tokenID = ev.TokenID
	}
	newly, banFor, err := s.cfg.Limiter.Failure(rctx, ip, tokenID)
	if err != nil || !newly {
		return 0, false
	}
	s.cfg.Metrics.Banned()
	ban := ev
	ban.Action = audit.ActionSourceBanned
	ban.Outcome = "success"
	ban.Reason = audit.ReasonSourceBanned
	ban.Message = "source " + ip.String() + " banned for " + banFor.String()
	ban.Fields = map[string]any{"ban.duration_s": int64(banFor.Seconds())}
	s.cfg.Events.Emit(ban)
	return banFor, true
}

func addrIP(addr net.Addr) (netip.Addr, bool) {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(tcp.IP)
		return ip.Unmap(), ok
	}
	return netip.Addr{}, false
}

// backendFault keeps only Redis faults, for the Redis error metric.
func backendFault(err error) error {
	var d *audit.Denial
	if errors.As(err, &d) && d.Reason == audit.ReasonBackendUnavailable {
		return err
	}
	return nil
}
