package auth

import (
	"context"
	"time"

	"github.com/tokengate/tokengate/audit"
)

// Verifier turns a presented token into a grant or a denial.
type Verifier struct {
	Store *Store
	// Timeout bounds each Redis lookup; past it the login is refused as
	// backend_unavailable rather than left hanging.
	Timeout time.Duration
	Now     func() time.Time
}

// Verify checks a presented token. It returns the token's record, or an
// *audit.Denial. The record is also returned with some denials (expired,
// revoked, secret mismatch) so the caller can log the token ID; the secret is
// never part of either.
func (v *Verifier) Verify(ctx context.Context, presented, user string) (*Record, error) {
	tok, err := ParseToken(presented)
	if err != nil {
		return nil, err
	}
	now := v.now()

	timeout := v.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rec, state, err := v.Store.Lookup(ctx, tok.ID, now)
	if err != nil {
		return &Record{ID: tok.ID}, backendDown(err)
	}

	switch state {
	case StateUnknown:
		return &Record{ID: tok.ID}, unknownToken()
	case StateExpired:
		return rec, audit.Deny(audit.ReasonTokenExpired, "token %s expired at %s",
			tok.ID, rec.ExpiresAt.UTC().Format(time.RFC3339))
	case StateRevoked:
		return rec, audit.Deny(audit.ReasonTokenRevoked, "token %s was revoked", tok.ID)
	}

	// Only a live token's hash is compared; an unknown token and a wrong
	// secret read the same to the client.
	if !SecretMatches(tok.Secret, rec.SecretHash) {
		d := unknownToken()
		d.Reason = audit.ReasonSecretMismatch
		return rec, d
	}
	if d := v.checkLimits(ctx, rec, user, now); d != nil {
		return rec, d
	}
	return rec, nil
}

// checkLimits applies the optional limits of a token whose secret matched.
func (v *Verifier) checkLimits(ctx context.Context, rec *Record, user string,
	now time.Time) *audit.Denial {
	if !rec.NotBefore.IsZero() && now.Before(rec.NotBefore) {
		return audit.Deny(audit.ReasonTokenNotYetValid, "token %s is not valid before %s",
			rec.ID, rec.NotBefore.UTC().Format(time.RFC3339))
	}
	if rec.User != "" && rec.User != user {
		return audit.Deny(audit.ReasonUserMismatch,
			"token %s is not valid for SSH user %q", rec.ID, user)
	}
	if rec.Parent != "" {
		_, state, err := v.Store.Lookup(ctx, rec.Parent, now)
		if err != nil {
			return backendDown(err)
		}
		if state != StateLive {
			return audit.Deny(audit.ReasonTokenRevoked,
				"token %s was revoked (the token that issued it is no longer valid)", rec.ID)
		}
	}
	if rec.SingleUse {
		if !rec.UsedAt.IsZero() {
			return spent(rec.ID)
		}
		won, err := v.Store.Spend(ctx, rec.ID, now)
		if err != nil {
			return backendDown(err)
		}
		if !won {
			return spent(rec.ID)
		}
	}
	return nil
}

func spent(id string) *audit.Denial {
	return audit.Deny(audit.ReasonTokenUsed, "token %s was single-use and is spent", id)
}

func backendDown(err error) *audit.Denial {
	d := audit.Deny(audit.ReasonBackendUnavailable,
		"the authentication backend is unavailable; try again shortly")
	d.Cause = err
	return d
}

func unknownToken() *audit.Denial {
	return audit.Deny(audit.ReasonTokenUnknown, "unknown token, or wrong secret")
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}
