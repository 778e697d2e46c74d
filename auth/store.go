package auth

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis layout. README documents it for admins using redis-cli.
//
//	tokengate:token:<id>  hash, one per live token; its TTL ends at the expiry.
//	                      DEL of this key revokes the token.
//	tokengate:meta:<id>   hash with no secret, kept for MetaRetention past the
//	                      expiry, so a refusal can say "expired" or "revoked"
//	                      rather than "unknown", and so last use is remembered.
//	tokengate:revocations pub/sub channel; the message is a token ID.
const (
	KeyPrefix         = "tokengate:"
	RevocationChannel = KeyPrefix + "revocations"
	MetaRetention     = 30 * 24 * time.Hour
)

// TokenKey is the Redis key of a live token.
func TokenKey(id string) string { return KeyPrefix + "token:" + id }

// MetaKey is the Redis key of a token's secret-free history.
func MetaKey(id string) string { return KeyPrefix + "meta:" + id }

// ChildrenKey is the set of tokens a token minted over SSH.
func ChildrenKey(id string) string { return KeyPrefix + "children:" + id }

// Record is what Redis knows about a token. It holds the secret's hash, never
// the secret.
type Record struct {
	ID         string
	SecretHash string
	Scopes     Scope
	Root       string // relative to the gateway's data dir
	ExpiresAt  time.Time
	CreatedAt  time.Time
	Note       string

	// Optional limits; zero values mean none.
	User        string    // the only SSH user name the token works for
	MaxSessions int       // concurrent logins, counted across all gateways
	SingleUse   bool      // exactly one login, ever
	NotBefore   time.Time // refused before this time
	Parent      string    // the token that minted this one over SSH
	UsedAt      time.Time // when a single-use token was spent

	// From the meta key; zero when unknown.
	RevokedAt    time.Time
	LastUsedAt   time.Time
	LastUsedFrom string
}

// State says what a lookup found.
type State int

const (
	StateLive    State = iota // the token key exists
	StateUnknown              // neither key exists
	StateExpired              // the token key is gone and its expiry has passed
	StateRevoked              // the token key is gone before its expiry
)

// Store reads and writes tokens in Redis.
type Store struct {
	rdb redis.UniversalClient
}

// NewStore wraps a Redis client.
func NewStore(rdb redis.UniversalClient) *Store { return &Store{rdb: rdb} }

// Client exposes the Redis client for the revocation feed and health checks.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// CleanRoot validates a token root given by an admin: a relative path that
// stays inside the data dir. It returns the cleaned form.
func CleanRoot(root string) (string, error) {
	if root == "" {
		return "", errors.New("root is empty (give a directory relative to the data dir)")
	}
	if strings.HasPrefix(root, "/") {
		return "", fmt.Errorf("root %q must be relative to the data dir", root)
	}
	if strings.ContainsRune(root, 0) {
		return "", errors.New("root contains a NUL byte")
	}
	clean := path.Clean(root)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("root %q must name a directory inside the data dir", root)
	}
	return clean, nil
}

// Create stores a new token and its meta record in one transaction.
func (s *Store) Create(ctx context.Context, rec Record) error {
	if !ValidID(rec.ID) {
		return fmt.Errorf("invalid token ID %q", rec.ID)
	}
	meta := map[string]any{
		"scopes":     rec.Scopes.String(),
		"root":       rec.Root,
		"expires_at": formatTime(rec.ExpiresAt),
		"created_at": formatTime(rec.CreatedAt),
		"note":       rec.Note,
	}
	if rec.User != "" {
		meta["user"] = rec.User
	}
	if rec.MaxSessions > 0 {
		meta["max_sessions"] = strconv.Itoa(rec.MaxSessions)
	}
	if rec.SingleUse {
		meta["single_use"] = "1"
	}
	if !rec.NotBefore.IsZero() {
		meta["not_before"] = formatTime(rec.NotBefore)
	}
	if rec.Parent != "" {
		meta["parent"] = rec.Parent
	}
	fields := map[string]any{"secret_sha256": rec.SecretHash}
	for k, v := range meta {
		fields[k] = v
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, TokenKey(rec.ID), fields)
		p.PExpireAt(ctx, TokenKey(rec.ID), rec.ExpiresAt)
		p.HSet(ctx, MetaKey(rec.ID), meta)
		p.PExpireAt(ctx, MetaKey(rec.ID), rec.ExpiresAt.Add(MetaRetention))
		if rec.Parent != "" {
			// The parent's revocation cascades to its children through this set.
			p.SAdd(ctx, ChildrenKey(rec.Parent), rec.ID)
			p.PExpireAt(ctx, ChildrenKey(rec.Parent), rec.ExpiresAt.Add(MetaRetention))
		}
		return nil
	})
	return err
}

// Lookup fetches a token and its meta record in one round trip and says
// whether the token is live, expired, revoked or unknown.
func (s *Store) Lookup(ctx context.Context, id string, now time.Time) (*Record, State, error) {
	recs, states, err := s.lookupMany(ctx, []string{id}, now)
	if err != nil {
		return nil, StateUnknown, err
	}
	return recs[0], states[0], nil
}

// lookupMany is Lookup for many IDs, in one round trip.
func (s *Store) lookupMany(ctx context.Context, ids []string,
	now time.Time) ([]*Record, []State, error) {
	toks := make([]*redis.MapStringStringCmd, len(ids))
	metas := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			toks[i] = p.HGetAll(ctx, TokenKey(id))
			metas[i] = p.HGetAll(ctx, MetaKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	recs := make([]*Record, len(ids))
	states := make([]State, len(ids))
	for i, id := range ids {
		if recs[i], states[i], err = classify(id, toks[i].Val(), metas[i].Val(), now); err != nil {
			return nil, nil, err
		}
	}
	return recs, states, nil
}

// classify decodes a token's two hashes and says what state it is in.
func classify(id string, tok, meta map[string]string, now time.Time) (*Record, State, error) {
	if len(tok) == 0 && len(meta) == 0 {
		return nil, StateUnknown, nil
	}
	rec, err := decodeRecord(id, tok, meta)
	if err != nil {
		return nil, StateUnknown, err
	}
	switch {
	case len(tok) > 0 && !rec.ExpiresAt.After(now):
		// Redis may not have evicted it yet; the stored expiry is the truth.
		return rec, StateExpired, nil
	case len(tok) > 0:
		return rec, StateLive, nil
	case !rec.RevokedAt.IsZero():
		return rec, StateRevoked, nil
	case !rec.ExpiresAt.After(now):
		return rec, StateExpired, nil
	default:
		// The token key vanished before its expiry: an admin's DEL.
		return rec, StateRevoked, nil
	}
}

// liveIDs lists the IDs that have a token key, by SCAN.
func (s *Store) liveIDs(ctx context.Context) ([]string, error) {
	var ids []string
	iter := s.rdb.Scan(ctx, 0, TokenKey("*"), 1000).Iterator()
	for iter.Next(ctx) {
		if id := strings.TrimPrefix(iter.Val(), TokenKey("")); ValidID(id) {
			ids = append(ids, id)
		}
	}
	return ids, iter.Err()
}

// List returns every live token, soonest expiry first.
func (s *Store) List(ctx context.Context, now time.Time) ([]*Record, error) {
	ids, err := s.liveIDs(ctx)
	if err != nil {
		return nil, err
	}
	recs, states, err := s.lookupMany(ctx, ids, now)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for i, rec := range recs {
		if states[i] == StateLive {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExpiresAt.Before(out[j].ExpiresAt) })
	return out, nil
}

// Revoke deletes a live token and every token it minted, marks their meta
// records and broadcasts each ID so every gateway cuts their live sessions.
// It reports whether the named token was live.
func (s *Store) Revoke(ctx context.Context, id string, now time.Time) (bool, error) {
	ids := []string{id}
	// Walk the minted tokens breadth first; the bound guards against a
	// hand-made cycle in the children sets.
	for i := 0; i < len(ids) && len(ids) < 10000; i++ {
		kids, err := s.rdb.SMembers(ctx, ChildrenKey(ids[i])).Result()
		if err != nil {
			return false, err
		}
		for _, k := range kids {
			if ValidID(k) && !contains(ids, k) {
				ids = append(ids, k)
			}
		}
	}
	var first *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, rid := range ids {
			del := p.Del(ctx, TokenKey(rid))
			if i == 0 {
				first = del
			}
			p.Eval(ctx, markRevoked, []string{MetaKey(rid)}, formatTime(now))
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	for _, rid := range ids {
		if err := s.rdb.Publish(ctx, RevocationChannel, rid).Err(); err != nil {
			return false, err
		}
	}
	return first.Val() == 1, nil
}

// markRevoked sets revoked_at only on a meta record that exists, so that a
// revocation of an unknown ID leaves no key without a TTL behind.
const markRevoked = `if redis.call("EXISTS", KEYS[1]) == 1 then
  redis.call("HSET", KEYS[1], "revoked_at", ARGV[1])
end
return 0`

// Shorten brings a live token's expiry forward to until (if it is later),
// which is how a rotated token's overlap ends.
func (s *Store) Shorten(ctx context.Context, id string, until time.Time) error {
	return s.rdb.Eval(ctx, shortenScript, []string{TokenKey(id), MetaKey(id)},
		formatTime(until), until.UnixMilli(), until.Add(MetaRetention).UnixMilli()).Err()
}

const shortenScript = `if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
local now = redis.call("TIME")
local nowms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ttl >= 0 and nowms + ttl <= tonumber(ARGV[2]) then return 0 end
redis.call("HSET", KEYS[1], "expires_at", ARGV[1])
redis.call("PEXPIREAT", KEYS[1], ARGV[2])
redis.call("HSET", KEYS[2], "expires_at", ARGV[1])
redis.call("PEXPIREAT", KEYS[2], ARGV[3])
return 1`

// Spend marks a single-use token as used. Exactly one caller gets true, even
// when logins on several gateways race: HSETNX is atomic in Redis.
func (s *Store) Spend(ctx context.Context, id string, now time.Time) (bool, error) {
	n, err := s.rdb.Eval(ctx, spendScript, []string{TokenKey(id), MetaKey(id)}, formatTime(now)).Int()
	return n == 1, err
}

// spendScript refuses a token key that vanished meanwhile rather than
// recreating it without a TTL.
const spendScript = `if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
local won = redis.call("HSETNX", KEYS[1], "used_at", ARGV[1])
if won == 1 then redis.call("HSET", KEYS[2], "used_at", ARGV[1]) end
return won`

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// States reports, for each ID, whether its token is live, expired, revoked
// or unknown, in one round trip. It is the periodic re-check behind the
// revocation feed, so it fetches only what that decision needs.
func (s *Store) States(ctx context.Context, ids []string, now time.Time) (map[string]State, error) {
	toks := make([]*redis.SliceCmd, len(ids))
	metas := make([]*redis.SliceCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			toks[i] = p.HMGet(ctx, TokenKey(id), "expires_at", "parent")
			metas[i] = p.HMGet(ctx, MetaKey(id), "expires_at", "revoked_at")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]State, len(ids))
	parents := map[string]string{}
	for i, id := range ids {
		tok, meta := toks[i].Val(), metas[i].Val()
		expires := func(v []any) time.Time {
			if len(v) > 0 {
				if str, ok := v[0].(string); ok {
					t, _ := parseTime(str)
					return t
				}
			}
			return time.Time{}
		}
		switch {
		case len(tok) == 2 && tok[0] != nil:
			if t := expires(tok); !t.IsZero() && !t.After(now) {
				out[id] = StateExpired
			} else {
				out[id] = StateLive
			}
		case len(meta) == 2 && meta[1] != nil:
			out[id] = StateRevoked
		case len(meta) == 2 && meta[0] != nil && !expires(meta).After(now):
			out[id] = StateExpired
		case len(meta) == 2 && meta[0] != nil:
			out[id] = StateRevoked
		default:
			// Both keys gone: an admin deleted everything. Treat as revoked.
			out[id] = StateRevoked
		}
		if parent, ok := tok[1].(string); ok && out[id] == StateLive && ValidID(parent) {
			parents[id] = parent
		}
	}
	if len(parents) == 0 {
		return out, nil
	}

	// A minted token lives only as long as the token that minted it, even
	// when an admin removed the parent with a plain DEL.
	alive := map[string]*redis.IntCmd{}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, parent := range parents {
			if alive[parent] == nil {
				alive[parent] = p.Exists(ctx, TokenKey(parent))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for id, parent := range parents {
		if alive[parent].Val() == 0 {
			out[id] = StateRevoked
		}
	}
	return out, nil
}

// NoteUse records when and from where a token was last used. It is best
// effort: a failure here never refuses a login.
func (s *Store) NoteUse(ctx context.Context, id, from string, now time.Time) error {
	return s.rdb.HSet(ctx, MetaKey(id), "last_used_at", formatTime(now),
		"last_used_from", from).Err()
}

func decodeRecord(id string, tok, meta map[string]string) (*Record, error) {
	src := tok
	if len(src) == 0 {
		src = meta
	}
	rec := &Record{ID: id, SecretHash: tok["secret_sha256"], Root: src["root"], Note: src["note"]}
	var err error
	if src["scopes"] != "" {
		if rec.Scopes, err = ParseScopes(src["scopes"]); err != nil {
			return nil, fmt.Errorf("token %s: stored scopes: %w", id, err)
		}
	}
	if rec.ExpiresAt, err = parseTime(src["expires_at"]); err != nil {
		return nil, fmt.Errorf("token %s: stored expires_at: %w", id, err)
	}
	rec.CreatedAt, _ = parseTime(src["created_at"])
	rec.User = src["user"]
	rec.MaxSessions, _ = strconv.Atoi(src["max_sessions"])
	rec.SingleUse = src["single_use"] == "1"
	rec.NotBefore, _ = parseTime(src["not_before"])
	rec.Parent = src["parent"]
	rec.UsedAt, _ = parseTime(tok["used_at"])
	rec.RevokedAt, _ = parseTime(meta["revoked_at"])
	rec.LastUsedAt, _ = parseTime(meta["last_used_at"])
	rec.LastUsedFrom = meta["last_used_from"]
	return rec, nil
}

// Times are stored as RFC 3339 in UTC with milliseconds, readable in redis-cli.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("missing")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	// Accept unix seconds too, for admins who write records by hand.
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor unix seconds", s)
	}
	return time.Unix(n, 0), nil
}

// CountExpiring counts live tokens inside their expiry warning window: the
// last fraction of their lifetime, at most max. It scans every token, so it
// is meant for a once-a-minute gauge, not for a request path.
func (s *Store) CountExpiring(ctx context.Context, now time.Time, fraction float64,
	max time.Duration) (int, error) {
	ids, err := s.liveIDs(ctx)
	if err != nil {
		return 0, err
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, TokenKey(id), "created_at", "expires_at")
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cmds {
		v := c.Val()
		created, _ := v[0].(string)
		expires, _ := v[1].(string)
		ct, err1 := parseTime(created)
		et, err2 := parseTime(expires)
		if err1 == nil && err2 == nil && InWarningWindow(ct, et, now, fraction, max) {
			n++
		}
	}
	return n, nil
}

// InWarningWindow reports whether a token created at created and expiring
// at expires is, at now, within the last fraction of its life (at most max).
func InWarningWindow(created, expires, now time.Time, fraction float64, max time.Duration) bool {
	left := expires.Sub(now)
	window := time.Duration(float64(expires.Sub(created)) * fraction)
	if window > max {
		window = max
	}
	return left > 0 && left <= window
}
