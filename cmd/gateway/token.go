package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

func tokenCommand() *ffcli.Command {
	return &ffcli.Command{
		Name:       "token",
		ShortUsage: "gateway token <create|list|show|revoke|rotate> [flags]",
		ShortHelp:  "manage API tokens in Redis",
		FlagSet:    flag.NewFlagSet("gateway token", flag.ContinueOnError),
		Subcommands: []*ffcli.Command{
			tokenCreateCommand(),
			tokenListCommand(),
			tokenShowCommand(),
			tokenRevokeCommand(),
			tokenRotateCommand(),
		},
		Exec: func(context.Context, []string) error { return flag.ErrHelp },
	}
}

// createOptions are the properties of a new token.
type createOptions struct {
	root        string
	scopes      string
	ttl         time.Duration
	note        string
	json        bool
	user        string
	maxSessions int
	singleUse   bool
	notBefore   string
}

// newTokenRecord validates the options and draws a token. Nothing is stored.
func (c *createOptions) newTokenRecord(now time.Time) (auth.Token, auth.Record, error) {
	root, err := auth.CleanRoot(c.root)
	if err != nil {
		return auth.Token{}, auth.Record{}, fmt.Errorf("--root: %w", err)
	}
	scopes, err := auth.ParseScopes(c.scopes)
	if err != nil {
		return auth.Token{}, auth.Record{}, fmt.Errorf("--scope: %w", err)
	}
	if c.ttl <= 0 {
		return auth.Token{}, auth.Record{}, fmt.Errorf("--ttl must be positive (got %v)", c.ttl)
	}
	if strings.ContainsAny(c.note, "\r\n") {
		return auth.Token{}, auth.Record{}, errors.New("--note must be one line")
	}
	if audit.RedactTokens(c.note) != c.note {
		return auth.Token{}, auth.Record{}, errors.New("--note holds a token; notes are shown to every admin")
	}
	if c.maxSessions < 0 {
		return auth.Token{}, auth.Record{}, fmt.Errorf("--max-sessions must be 0 (no cap) or more")
	}
	if strings.ContainsAny(c.user, " \t\r\n") {
		return auth.Token{}, auth.Record{}, errors.New("--user must be one word")
	}
	var notBefore time.Time
	if c.notBefore != "" {
		if notBefore, err = time.Parse(time.RFC3339, c.notBefore); err != nil {
			return auth.Token{}, auth.Record{}, fmt.Errorf("--not-before: want RFC 3339, "+
				"e.g. 2026-12-05T07:00:00Z (%v)", err)
		}
		if !notBefore.Before(now.Add(c.ttl)) {
			return auth.Token{}, auth.Record{}, errors.New("--not-before is after the expiry (--ttl counts from now)")
		}
	}
	tok, err := auth.NewToken()
	if err != nil {
		return auth.Token{}, auth.Record{}, err
	}
	rec := auth.Record{
		ID:          tok.ID,
		SecretHash:  auth.HashSecret(tok.Secret),
		Scopes:      scopes,
		Root:        root,
		ExpiresAt:   now.Add(c.ttl),
		CreatedAt:   now,
		Note:        c.note,
		User:        c.user,
		MaxSessions: c.maxSessions,
		SingleUse:   c.singleUse,
		NotBefore:   notBefore,
	}
	return tok, rec, nil
}

func tokenCreateCommand() *ffcli.Command {
	var c createOptions
	return adminCommand(adminSpec{
		name:  "create",
		usage: "gateway token create --root DIR [--scope read,write] [--ttl 24h] [--note TEXT]",
		help:  "create a token; prints it once on stdout",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.root, "root", "", "directory the token can see, relative to the gateway's data dir")
			fs.StringVar(&c.scopes, "scope", "read", "comma-separated: read, write, delete, issue")
			fs.StringVar(&c.user, "user", "", "the token only works for this SSH user name")
			fs.IntVar(&c.maxSessions, "max-sessions", 0, "concurrent logins across all gateways (0: the gateway's --default-max-sessions)")
			fs.BoolVar(&c.singleUse, "single-use", false, "the token works for exactly one login")
			fs.StringVar(&c.notBefore, "not-before", "", "refuse logins before this RFC 3339 time")
			fs.DurationVar(&c.ttl, "ttl", 24*time.Hour, "lifetime, e.g. 15m, 24h")
			fs.StringVar(&c.note, "note", "", "free text shown by list and show")
			fs.BoolVar(&c.json, "json", false, "print token, ID and details as JSON on stdout")
		},
		run: func(ctx context.Context, rdb *redis.Client, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("create takes no arguments (got %q)", args[0])
			}
			tok, rec, err := c.newTokenRecord(time.Now())
			if err != nil {
				return err
			}
			if err := auth.NewStore(rdb).Create(ctx, rec); err != nil {
				return fmt.Errorf("storing token: %w", err)
			}
			adminEvent(ctx, rdb, createdEvent(&rec, ""))
			return printCreated(os.Stdout, os.Stderr, tok, &rec, c.json)
		},
	})
}

// createdEvent describes a new token for the audit trail; rotatedFrom
// names the token it replaces, if any.
func createdEvent(rec *auth.Record, rotatedFrom string) audit.Event {
	fields := map[string]any{"token.scopes": rec.Scopes.String(), "token.root": rec.Root,
		"token.expires_at": rec.ExpiresAt.UTC().Format(time.RFC3339)}
	msg := "token " + rec.ID + " created"
	if rotatedFrom != "" {
		fields["token.rotated_from"] = rotatedFrom
		msg += " to replace " + rotatedFrom
	}
	return audit.Event{Action: audit.ActionTokenCreated, TokenID: rec.ID, Message: msg, Fields: fields}
}

func printCreated(stdout, stderr io.Writer, tok auth.Token, rec *auth.Record, asJSON bool) error {
	if asJSON {
		out := recordJSON(rec, time.Now())
		out["token"] = tok.String()
		return json.NewEncoder(stdout).Encode(out)
	}
	fmt.Fprintf(stderr, "created token %s: scope %s, root %s, expires %s\n",
		rec.ID, rec.Scopes, rec.Root, rec.ExpiresAt.UTC().Format(time.RFC3339))
	fmt.Fprintln(stderr, "the token is shown once; store it now")
	_, err := fmt.Fprintln(stdout, tok.String())
	return err
}

func tokenListCommand() *ffcli.Command {
	var asJSON bool
	var within time.Duration
	var root string
	return adminCommand(adminSpec{
		name:  "list",
		usage: "gateway token list [--expiring-within 72h] [--root DIR] [--json]",
		help:  "list live tokens, soonest expiry first; never shows a secret",
		calls: 4,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "one JSON object per token")
			fs.DurationVar(&within, "expiring-within", 0, "only tokens that expire within this time, e.g. 72h")
			fs.StringVar(&root, "root", "", "only tokens whose root is this directory or below it")
		},
		run: func(ctx context.Context, rdb *redis.Client, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("list takes no arguments (got %q)", args[0])
			}
			if within < 0 {
				return fmt.Errorf("--expiring-within must not be negative (got %v)", within)
			}
			store := auth.NewStore(rdb)
			now := time.Now()
			recs, err := store.List(ctx, now)
			if err != nil {
				return fmt.Errorf("listing tokens: %w", err)
			}
			recs = filterRecords(recs, now, within, root)
			ids := make([]string, len(recs))
			for i, rec := range recs {
				ids[i] = rec.ID
			}
			live, err := store.LiveLogins(ctx, ids, now)
			if err != nil {
				return fmt.Errorf("counting live sessions: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				for _, rec := range recs {
					out := recordJSON(rec, now)
					out["live_sessions"] = live[rec.ID]
					if err := enc.Encode(out); err != nil {
						return err
					}
				}
				return nil
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSCOPE\tROOT\tEXPIRES\tLEFT\tLAST USE\tLIVE\tNOTE")
			for _, rec := range recs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", rec.ID, rec.Scopes, rec.Root,
					rec.ExpiresAt.UTC().Format(time.RFC3339), left(rec.ExpiresAt, now),
					lastUse(rec), live[rec.ID], rec.Note)
			}
			return w.Flush()
		},
	})
}

// filterRecords keeps the tokens that expire within `within` (when set) and
// whose root is root or below it (when set).
func filterRecords(recs []*auth.Record, now time.Time, within time.Duration,
	root string) []*auth.Record {
	if root != "" {
		root = strings.Trim(path.Clean(root), "/")
	}
	var out []*auth.Record
	for _, rec := range recs {
		if within > 0 && rec.ExpiresAt.Sub(now) > within {
			continue
		}
		if root != "" && rec.Root != root && !strings.HasPrefix(rec.Root, root+"/") {
			continue
		}
		out = append(out, rec)
	}
	return out
}

func tokenRotateCommand() *ffcli.Command {
	var overlap, ttl time.Duration
	var asJSON bool
	return adminCommand(adminSpec{
		name:  "rotate",
		usage: "gateway token rotate ID [--overlap 10m] [--ttl D]",
		help:  "issue a replacement with the same scope and root; the old one ends after --overlap",
		calls: 4,
		flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&overlap, "overlap", 10*time.Minute, "the old token keeps working this long")
			fs.DurationVar(&ttl, "ttl", 0, "lifetime of the new token (default: the old token's lifetime)")
			fs.BoolVar(&asJSON, "json", false, "print the new token and its details as JSON")
		},
		run: func(ctx context.Context, rdb *redis.Client, args []string) error {
			id, err := oneTokenID(args)
			if err != nil {
				return err
			}
			if overlap < 0 {
				return errors.New("--overlap must not be negative")
			}
			store := auth.NewStore(rdb)
			now := time.Now()
			old, state, err := store.Lookup(ctx, id, now)
			if err != nil {
				return fmt.Errorf("reading token: %w", err)
			}
			if state != auth.StateLive {
				return fmt.Errorf("token %s is %s; only a live token can be rotated", id, stateName(state))
			}
			if ttl <= 0 {
				ttl = old.ExpiresAt.Sub(old.CreatedAt)
			}
			tok, err := auth.NewToken()
			if err != nil {
				return err
			}
			rec := *old
			rec.ID, rec.SecretHash = tok.ID, auth.HashSecret(tok.Secret)
			rec.CreatedAt, rec.ExpiresAt = now, now.Add(ttl)
			rec.Note = strings.TrimSpace(old.Note + " (rotated from " + old.ID + ")")
			rec.UsedAt, rec.LastUsedAt, rec.LastUsedFrom = time.Time{}, time.Time{}, ""
			if err := store.Create(ctx, rec); err != nil {
				return fmt.Errorf("storing the new token: %w", err)
			}
			if err := store.Shorten(ctx, old.ID, now.Add(overlap)); err != nil {
				return fmt.Errorf("ending the old token: %w", err)
			}
			adminEvent(ctx, rdb, createdEvent(&rec, old.ID))
			ends := now.Add(overlap)
			if old.ExpiresAt.Before(ends) {
				ends = old.ExpiresAt
			}
			fmt.Fprintf(os.Stderr, "token %s ends at %s\n", old.ID, ends.UTC().Format(time.RFC3339))
			return printCreated(os.Stdout, os.Stderr, tok, &rec, asJSON)
		},
	})
}

func tokenShowCommand() *ffcli.Command {
	return adminCommand(adminSpec{
		name:  "show",
		usage: "gateway token show ID",
		help:  "show one token as JSON; never shows a secret",
		run: func(ctx context.Context, rdb *redis.Client, args []string) error {
			id, err := oneTokenID(args)
			if err != nil {
				return err
			}
			now := time.Now()
			rec, state, err := auth.NewStore(rdb).Lookup(ctx, id, now)
			if err != nil {
				return fmt.Errorf("reading token: %w", err)
			}
			if state == auth.StateUnknown {
				return fmt.Errorf("no token %s", id)
			}
			out := recordJSON(rec, now)
			out["state"] = stateName(state)
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	})
}

func tokenRevokeCommand() *ffcli.Command {
	return adminCommand(adminSpec{
		name:  "revoke",
		usage: "gateway token revoke ID",
		help:  "revoke a token now; live sessions on every gateway are cut",
		calls: 2,
		run: func(ctx context.Context, rdb *redis.Client, args []string) error {
			id, err := oneTokenID(args)
			if err != nil {
				return err
			}
			store := auth.NewStore(rdb)
			if _, state, err := store.Lookup(ctx, id, time.Now()); err != nil {
				return fmt.Errorf("reading token: %w", err)
			} else if state == auth.StateUnknown {
				// Still broadcast: a gateway may hold sessions of a token
				// whose keys an admin deleted by hand.
				_, _ = store.Revoke(ctx, id, time.Now())
				return fmt.Errorf("no token %s (mistyped ID?); revocation broadcast anyway", id)
			}
			deleted, err := store.Revoke(ctx, id, time.Now())
			if err != nil {
				return fmt.Errorf("revoking token: %w", err)
			}
			adminEvent(ctx, rdb, audit.Event{Action: audit.ActionTokenRevoked, TokenID: id,
				Message: "token " + id + " revoked by an admin",
				Fields:  map[string]any{"token.was_live": deleted}})
			if !deleted {
				fmt.Fprintf(os.Stderr, "token %s had already expired or been revoked\n", id)
				return nil
			}
			fmt.Fprintf(os.Stderr, "revoked token %s\n", id)
			return nil
		},
	})
}

func oneTokenID(args []string) (string, error) {
	if len(args) != 1 {
		return "", errors.New("give exactly one token ID")
	}
	id := args[0]
	// Accept a whole token by mistake, but never echo it back.
	if strings.HasPrefix(id, "tg_") {
		tok, err := auth.ParseToken(id)
		if err != nil {
			return "", errors.New("that is neither a token ID nor a valid token")
		}
		id = tok.ID
	}
	if !auth.ValidID(id) {
		return "", fmt.Errorf("%q is not a token ID (12 characters of a-z, 0-9)", id)
	}
	return id, nil
}

func recordJSON(rec *auth.Record, now time.Time) map[string]any {
	out := map[string]any{
		"id":         rec.ID,
		"scopes":     strings.Split(rec.Scopes.String(), ","),
		"root":       rec.Root,
		"expires_at": rec.ExpiresAt.UTC().Format(time.RFC3339),
		"expires_in": left(rec.ExpiresAt, now),
		"created_at": rec.CreatedAt.UTC().Format(time.RFC3339),
		"note":       rec.Note,
	}
	if rec.User != "" {
		out["user"] = rec.User
	}
	if rec.MaxSessions > 0 {
		out["max_sessions"] = rec.MaxSessions
	}
	if rec.SingleUse {
		out["single_use"] = true
		if !rec.UsedAt.IsZero() {
			out["used_at"] = rec.UsedAt.UTC().Format(time.RFC3339)
		}
	}
	if !rec.NotBefore.IsZero() {
		out["not_before"] = rec.NotBefore.UTC().Format(time.RFC3339)
	}
	if rec.Parent != "" {
		out["parent"] = rec.Parent
	}
	if !rec.LastUsedAt.IsZero() {
		out["last_used_at"] = rec.LastUsedAt.UTC().Format(time.RFC3339)
		out["last_used_from"] = rec.LastUsedFrom
	}
	if !rec.RevokedAt.IsZero() {
		out["revoked_at"] = rec.RevokedAt.UTC().Format(time.RFC3339)
	}
	return out
}

func left(expires, now time.Time) string {
	d := expires.Sub(now)
	if d <= 0 {
		return "expired"
	}
	return d.Round(time.Second).String()
}

func lastUse(rec *auth.Record) string {
	if rec.LastUsedAt.IsZero() {
		return "never"
	}
	return rec.LastUsedAt.UTC().Format(time.RFC3339) + " from " + rec.LastUsedFrom
}

func stateName(st auth.State) string {
	switch st {
	case auth.StateLive:
		return "live"
	case auth.StateExpired:
		return "expired"
	case auth.StateRevoked:
		return "revoked"
	}
	return "unknown"
}
