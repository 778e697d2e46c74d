package auth

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Live logins are counted in Redis so that a token's --max-sessions holds
// across every gateway sharing it, and so `token list` can show them.
//
//	tokengate:live:<id>  sorted set; member "<gateway>/<connection>", score
//	                     the lease's end in unix ms. A gateway renews its
//	                     leases while the connections live; a gateway that
//	                     dies stops renewing and its leases lapse.

// LiveKey is the sorted set of a token's live logins.
func LiveKey(id string) string { return KeyPrefix + "live:" + id }

// LeaseTTL is how long a login counts without renewal. Gateways renew
// every LeaseTTL/3.
const LeaseTTL = 30 * time.Second

// acquireScript drops lapsed leases, then adds this one unless the token is
// at its cap (ARGV[3], 0 for none). It returns 1 and the new count, or 0 and
// the current count.
const acquireScript = `redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
local n = redis.call("ZCARD", KEYS[1])
local cap = tonumber(ARGV[3])
if cap > 0 and n >= cap then return {0, n} end
redis.call("ZADD", KEYS[1], ARGV[2], ARGV[4])
redis.call("PEXPIREAT", KEYS[1], ARGV[2])
return {1, n + 1}`

// AcquireLogin counts a new login of a token, refusing it when the token
// already has max (> 0) live logins. It is atomic across gateways.
func (s *Store) AcquireLogin(ctx context.Context, id, member string, max int,
	now time.Time) (bool, int, error) {
	res, err := s.rdb.Eval(ctx, acquireScript, []string{LiveKey(id)},
		now.UnixMilli(), now.Add(LeaseTTL).UnixMilli(), max, member).Int64Slice()
	if err != nil {
		return false, 0, err
	}
	return res[0] == 1, int(res[1]), nil
}

// ReleaseLogin stops counting a login.
func (s *Store) ReleaseLogin(ctx context.Context, id, member string) error {
	return s.rdb.ZRem(ctx, LiveKey(id), member).Err()
}

// RenewLogins extends the leases of this gateway's live logins, by token.
func (s *Store) RenewLogins(ctx context.Context, members map[string][]string, now time.Time) error {
	until := now.Add(LeaseTTL)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id, ms := range members {
			for _, m := range ms {
				p.ZAddXX(ctx, LiveKey(id), redis.Z{Score: float64(until.UnixMilli()), Member: m})
			}
			p.PExpireAt(ctx, LiveKey(id), until)
		}
		return nil
	})
	return err
}

// LiveLogins counts each token's unexpired leases.
func (s *Store) LiveLogins(ctx context.Context, ids []string, now time.Time) (map[string]int, error) {
	cmds := make([]*redis.IntCmd, len(ids))
	min := formatScore(now)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.ZCount(ctx, LiveKey(id), min, "+inf")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(ids))
	for i, id := range ids {
		out[id] = int(cmds[i].Val())
	}
	return out, nil
}

// formatScore is an exclusive lower bound: leases ending exactly now lapsed.
func formatScore(t time.Time) string {
	return "(" + strconv.FormatInt(t.UnixMilli(), 10)
}
