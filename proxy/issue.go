package proxy

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/gliderlabs/ssh"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

// DefaultIssueTTL is the lifetime of a minted token when --ttl is not given.
const DefaultIssueTTL = 15 * time.Minute

// isIssueCommand reports whether an exec asks to mint a child token:
// `token issue [--ttl D] [--scope S] [--root SUB] [--json]`.
func isIssueCommand(raw string) bool {
	f := strings.Fields(raw)
	return len(f) >= 2 && f[0] == "token" && f[1] == "issue"
}

// issueToken mints a child token for the holder of a token with the issue
// scope. A child never exceeds its parent: its scopes are a subset, its root
// is the parent's root or below it, and it expires no later than the parent.
// It also dies with the parent (see auth.Store.Revoke and States).
func (s *Server) issueToken(sess ssh.Session, ev audit.Event, g *grant) {
	parent := g.rec
	deny := func(reason audit.Reason, format string, args ...any) {
		s.refuse(sess, ev, sess.RawCommand(), audit.Deny(reason, format, args...))
	}
	if !parent.Scopes.Has(auth.ScopeIssue) {
		deny(audit.ReasonScopeMissing, "token %s lacks issue scope", parent.ID)
		return
	}

	fs := flag.NewFlagSet("token issue", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ttl := fs.Duration("ttl", DefaultIssueTTL, "lifetime of the new token")
	scopeList := fs.String("scope", (parent.Scopes &^ auth.ScopeIssue).String(), "scopes")
	sub := fs.String("root", "", "a directory below this token's root")
	asJSON := fs.Bool("json", false, "print token, ID and expiry as JSON")
	if err := fs.Parse(strings.Fields(sess.RawCommand())[2:]); err != nil || fs.NArg() > 0 {
		deny(audit.ReasonArgumentInvalid, "usage: token issue [--ttl 15m] [--scope read] "+
			"[--root SUBDIR] [--json]")
		return
	}
	if len(*sub) > 1024 {
		deny(audit.ReasonArgumentInvalid, "--root is longer than 1024 bytes")
		return
	}

	now := time.Now()
	scopes, err := auth.ParseScopes(*scopeList)
	if err != nil {
		deny(audit.ReasonArgumentInvalid, "--scope: %v", err)
		return
	}
	if !parent.Scopes.Has(scopes) {
		deny(audit.ReasonIssueForbidden, "token %s cannot grant %s (it has %s)",
			parent.ID, scopes, parent.Scopes)
		return
	}
	if *ttl <= 0 {
		deny(audit.ReasonArgumentInvalid, "--ttl must be positive")
		return
	}
	expires := now.Add(*ttl)
	if expires.After(parent.ExpiresAt) {
		deny(audit.ReasonIssueForbidden, "token %s expires at %s; a token it issues cannot outlive it",
			parent.ID, parent.ExpiresAt.UTC().Format(time.RFC3339))
		return
	}
	root := parent.Root
	if *sub != "" {
		rel := path.Clean(strings.TrimLeft(*sub, "/"))
		if rel == ".." || strings.HasPrefix(rel, "../") {
			deny(audit.ReasonPathOutsideRoot, "--root %s leaves the token's root", *sub)
			return
		}
		if root, err = auth.CleanRoot(path.Join(parent.Root, rel)); err != nil {
			deny(audit.ReasonArgumentInvalid, "--root: %v", err)
			return
		}
	}

	tok, err := auth.NewToken()
	if err != nil {
		s.fail(sess, ev, "issue: random", err)
		return
	}
	child := auth.Record{
		ID: tok.ID, SecretHash: auth.HashSecret(tok.Secret), Scopes: scopes, Root: root,
		ExpiresAt: expires, CreatedAt: now, Note: "issued by " + parent.ID,
		User: parent.User, Parent: parent.ID,
		// A child is never looser than its parent: it keeps the parent's
		// session cap and its single use.
		MaxSessions: parent.MaxSessions, SingleUse: parent.SingleUse,
	}
	ctx, cancel := context.WithTimeout(sess.Context(), 5*time.Second)
	defer cancel()
	if err := s.cfg.Store.Create(ctx, child); err != nil {
		s.refuse(sess, ev, sess.RawCommand(), backendUnavailable(err))
		return
	}

	issued := ev
	issued.Action = audit.ActionTokenIssued
	issued.Outcome = "success"
	issued.TokenID = child.ID
	issued.Message = fmt.Sprintf("token %s issued by %s", child.ID, parent.ID)
	issued.Fields = map[string]any{"token.parent.id": parent.ID, "token.scopes": scopes.String(),
		"token.root": root, "token.expires_at": expires.UTC().Format(time.RFC3339)}
	s.cfg.Events.Emit(issued)

	if *asJSON {
		_ = json.NewEncoder(sess).Encode(map[string]any{
			"token": tok.String(), "id": child.ID, "parent": parent.ID,
			"scopes": strings.Split(scopes.String(), ","), "root": root,
			"expires_at": expires.UTC().Format(time.RFC3339),
		})
	} else {
		_, _ = io.WriteString(sess, tok.String()+"\n")
	}
	_ = sess.Exit(0)
}

func backendUnavailable(err error) *audit.Denial {
	d := audit.Deny(audit.ReasonBackendUnavailable,
		"the authentication backend is unavailable; try again shortly")
	d.Cause = err
	return d
}
