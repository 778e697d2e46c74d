package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis layout of the attempt limiter, shared by every gateway on one Redis.
//
//	tokengate:fail:ip:<addr>      failed logins from a source in the current
//	                              window; the key lives one Window from the
//	                              first failure and is cleared when a ban starts.
//	tokengate:fail:token:<id>     failed logins naming a token ID, same window.
//	tokengate:ban:<addr>          a ban: its TTL is the time left, its value
//	                              the ban's number within the repeat memory.
//	tokengate:bans:count:<addr>   how many bans the source earned lately; it
//	                              outlives each ban by repeatMemory so a repeat
//	                              offender's next ban is longer.
//
// An admin may DEL a ban key by hand; a ban key written without a TTL bans
// until it is removed.
//
// The keys of one source are not hash-tagged, so on Redis Cluster the
// failure script would be refused as cross-slot; the gateway targets a
// single Redis (or a replicated primary), as the token store does.
const banPrefix = KeyPrefix + "ban:"

func failIPKey(ip netip.Addr) string   { return KeyPrefix + "fail:ip:" + ip.String() }
func failTokenKey(id string) string    { return KeyPrefix + "fail:token:" + id }
func banKey(ip netip.Addr) string      { return banPrefix + ip.String() }
func banCountKey(ip netip.Addr) string { return KeyPrefix + "bans:count:" + ip.String() }

// repeatMemory is how long after a ban ends a new ban still counts as a
// repeat and so lasts twice as long as the last one.
const repeatMemory = 24 * time.Hour

// LimiterConfig tunes the attempt limiter. Zero fields take the defaults.
type LimiterConfig struct {
	// Threshold is the number of failures within Window that bans a source
	// (default 10).
	Threshold int
	// Window is how long failures are remembered (default 10m). It is a
	// fixed window from the first failure, so it ends even while an
	// attacker keeps failing.
	Window time.Duration
	// BanTime is the first ban's length (default 15m); each repeat ban
	// within a day of the last one doubles it, up to MaxBanTime (default 24h).
	BanTime    time.Duration
	MaxBanTime time.Duration
	// TokenThreshold is the number of failures naming one token ID within
	// Window after which logins for that ID are refused as rate_limited
	// (default 20). It stops guessing spread over many sources; the price is
	// that someone who knows an ID can lock its owner out for a Window.
	TokenThreshold int
	// AllowList holds sources that are never banned nor limited, such as
	// the monitoring host or the office network.
	AllowList []netip.Prefix
}

// Ban is one banned source, as `gateway ban list` shows it.
type Ban struct {
	Addr      netip.Addr
	Remaining time.Duration // zero for a ban without an expiry, set by hand
	Count     int           // this ban's number among the source's recent bans
}

// Limiter scores failed logins per source address and per token ID in
// Redis, so a source banned by one gateway is banned by all of them.
type Limiter struct {
	rdb redis.UniversalClient
	cfg LimiterConfig
}

// NewLimiter wraps a Redis client; cfg's zero fields take the defaults.
func NewLimiter(rdb redis.UniversalClient, cfg LimiterConfig) *Limiter {
	if cfg.Threshold <= 0 {
		cfg.Threshold = 10
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Minute
	}
	if cfg.BanTime <= 0 {
		cfg.BanTime = 15 * time.Minute
	}
	if cfg.MaxBanTime <= 0 {
		cfg.MaxBanTime = 24 * time.Hour
	}
	// Redis counts expiries in whole milliseconds; a zero would delete at once.
	cfg.Window = max(cfg.Window, time.Millisecond)
	cfg.BanTime = max(cfg.BanTime, time.Millisecond)
	if cfg.MaxBanTime < cfg.BanTime {
		cfg.MaxBanTime = cfg.BanTime
	}
	if cfg.TokenThreshold <= 0 {
		cfg.TokenThreshold = 20
	}
	cfg.AllowList = slices.Clone(cfg.AllowList)
	return &Limiter{rdb: rdb, cfg: cfg}
}

// Banned says whether a source is banned and for how much longer, in one
// round trip. It runs before the SSH handshake of every connection.
func (l *Limiter) Banned(ctx context.Context, ip netip.Addr) (bool, time.Duration, error) {
	ip, err := normalise(ip)
	if err != nil || l.allowed(ip) {
		return false, 0, err
	}

	ttl, err := l.rdb.PTTL(ctx, banKey(ip)).Result()
	if err != nil {
		return false, 0, err
	}
	switch {
	case ttl > 0:
		return true, ttl, nil
	case ttl == -1:
		// go-redis reports "no expiry" as -1 (not scaled to a duration).
		return true, 0, nil
	default:
		return false, 0, nil
	}
}

// failureScript counts one failure and starts a ban when the source reaches
// the threshold. Running it as one script makes the check and the ban one
// step, so of many gateways racing at the threshold exactly one sees the ban
// start and reports it.
//
// KEYS: fail:ip, ban, bans:count, and fail:token when a token ID was given.
// ARGV: threshold, window ms, ban ms, max ban ms, repeat memory ms.
// Returns {1, ban ms} for a new ban, {0, remaining ms} while already banned
// (-1 for a ban without expiry), or {0, 0}.
var failureScript = redis.NewScript(`
local window = tonumber(ARGV[2])
if KEYS[4] then
  if redis.call('INCR', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], window) end
end

local left = redis.call('PTTL', KEYS[2])
if left > 0 or left == -1 then return {0, left} end

local fails = redis.call('INCR', KEYS[1])
if fails == 1 then redis.call('PEXPIRE', KEYS[1], window) end
if fails < tonumber(ARGV[1]) then return {0, 0} end

redis.call('DEL', KEYS[1])
local count = redis.call('INCR', KEYS[3])
local ban, max = tonumber(ARGV[3]), tonumber(ARGV[4])
for _ = 2, count do
  ban = ban * 2
  if ban >= max then ban = max break end
end
redis.call('SET', KEYS[2], count, 'PX', ban)
redis.call('PEXPIRE', KEYS[3], ban + tonumber(ARGV[5]))
return {1, ban}
`)

// Failure records a failed login from ip naming tokenID (empty when the
// presented token had no readable ID). newlyBanned is true for exactly one
// call per ban, across all gateways, so the caller emits one source.banned
// event; banFor is then the ban's length. While the source is already
// banned, failures do not count against it and banFor is the time left.
// Allow-listed sources are not recorded at all.
func (l *Limiter) Failure(ctx context.Context, ip netip.Addr,
	tokenID string) (newlyBanned bool, banFor time.Duration, err error) {
	ip, err = normalise(ip)
	if err != nil || l.allowed(ip) {
		return false, 0, err
	}

	keys := []string{failIPKey(ip), banKey(ip), banCountKey(ip)}
	// Only a well-formed ID gets a key: the client chose these bytes.
	if ValidID(tokenID) {
		keys = append(keys, failTokenKey(tokenID))
	}
	res, err := failureScript.Run(ctx, l.rdb, keys, l.cfg.Threshold,
		l.cfg.Window.Milliseconds(), l.cfg.BanTime.Milliseconds(),
		l.cfg.MaxBanTime.Milliseconds(), repeatMemory.Milliseconds()).Int64Slice()
	if err != nil {
		return false, 0, err
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("limiter: failure script returned %d values", len(res))
	}
	if res[1] < 0 {
		return false, 0, nil
	}
	return res[0] == 1, time.Duration(res[1]) * time.Millisecond, nil
}

// TokenLimited says whether a token ID has had too many failures lately. It
// is checked before the token lookup, so a guessed ID costs Redis one GET.
func (l *Limiter) TokenLimited(ctx context.Context, tokenID string) (bool, error) {
	if !ValidID(tokenID) {
		return false, nil
	}
	n, err := l.rdb.Get(ctx, failTokenKey(tokenID)).Int()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return n >= l.cfg.TokenThreshold, nil
}

// Bans lists every banned source, in address order.
func (l *Limiter) Bans(ctx context.Context) ([]Ban, error) {
	var keys []string
	iter := l.rdb.Scan(ctx, 0, banPrefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, nil
	}

	ttls := make([]*redis.DurationCmd, len(keys))
	counts := make([]*redis.StringCmd, len(keys))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			ttls[i] = p.PTTL(ctx, k)
			counts[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}

	var bans []Ban
	for i, k := range keys {
		addr, err := netip.ParseAddr(strings.TrimPrefix(k, banPrefix))
		ttl := ttls[i].Val()
		// Skip keys that are not ours and bans that ended since the scan.
		if err != nil || (ttl <= 0 && ttl != -1) {
			continue
		}
		b := Ban{Addr: addr}
		if ttl > 0 {
			b.Remaining = ttl
		}
		b.Count, _ = strconv.Atoi(counts[i].Val())
		bans = append(bans, b)
	}
	slices.SortFunc(bans, func(a, b Ban) int { return a.Addr.Compare(b.Addr) })
	return bans, nil
}

// Unban lifts a source's ban and forgets its failures and past bans, since
// an admin who lifts a ban has judged the source. It reports whether a ban
// was in force.
func (l *Limiter) Unban(ctx context.Context, ip netip.Addr) (bool, error) {
	ip, err := normalise(ip)
	if err != nil {
		return false, err
	}
	var del *redis.IntCmd
	_, err = l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, banKey(ip))
		p.Del(ctx, failIPKey(ip), banCountKey(ip))
		return nil
	})
	if err != nil {
		return false, err
	}
	return del.Val() == 1, nil
}

// normalise makes one key per host: an IPv4 client seen through an IPv6
// socket (::ffff:a.b.c.d) is the same source as a.b.c.d, and a zone names
// an interface, not a host.
func normalise(ip netip.Addr) (netip.Addr, error) {
	if !ip.IsValid() {
		return ip, errors.New("limiter: invalid source address")
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		// One IPv6 client commonly holds a whole /64; scoring single
		// addresses would let it spread its guesses over 2^64 of them.
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip, nil
}

func (l *Limiter) allowed(ip netip.Addr) bool {
	for _, p := range l.cfg.AllowList {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
