package auth

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/internal/redistest"
)

func newTestClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second,
		ReadTimeout: time.Second, MaxRetries: -1, PoolSize: 32})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func testLimiterConfig() LimiterConfig {
	return LimiterConfig{Threshold: 10, Window: time.Minute, BanTime: 300 * time.Millisecond,
		MaxBanTime: time.Second, TokenThreshold: 20}
}

// failUntilBanned records failures until a ban starts, at most max of them,
// and returns how many it took and how long the ban is.
func failUntilBanned(t *testing.T, l *Limiter, ip netip.Addr, max int) (int, time.Duration) {
	t.Helper()
	for i := 1; i <= max; i++ {
		banned, banFor, err := l.Failure(context.Background(), ip, "")
		if err != nil {
			t.Fatal(err)
		}
		if banned {
			return i, banFor
		}
	}
	t.Fatalf("%s not banned after %d failures", ip, max)
	return 0, 0
}

func waitUnbanned(t *testing.T, l *Limiter, ip netip.Addr, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		banned, _, err := l.Banned(context.Background(), ip)
		if err != nil {
			t.Fatal(err)
		}
		if !banned {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s still banned after %v", ip, within)
}

func TestLimiterBansAtThresholdOnce(t *testing.T) {
	srv := redistest.Start(t)
	l := NewLimiter(newTestClient(t, srv), testLimiterConfig())
	ctx := context.Background()
	attacker := netip.MustParseAddr("203.0.113.7")
	bystander := netip.MustParseAddr("203.0.113.8")

	newBans := 0
	for i := 1; i <= 1000; i++ {
		banned, banFor, err := l.Failure(ctx, attacker, "")
		if err != nil {
			t.Fatal(err)
		}
		if banned {
			newBans++
			if i != 10 || banFor != 300*time.Millisecond {
				t.Fatalf("banned at failure %d for %v; want failure 10 for 300ms", i, banFor)
			}
		}
		if i == 9 {
			if b, _, _ := l.Banned(ctx, attacker); b {
				t.Fatal("banned before the threshold")
			}
		}
	}
	if newBans != 1 {
		t.Fatalf("newlyBanned reported %d times, want once", newBans)
	}

	if b, left, err := l.Banned(ctx, attacker); err != nil || !b || left <= 0 {
		t.Fatalf("attacker: Banned = %v, %v, %v", b, left, err)
	}
	if b, _, err := l.Banned(ctx, bystander); err != nil || b {
		t.Fatalf("bystander: Banned = %v, %v", b, err)
	}

	// The same host seen through an IPv6 socket is the same source.
	mapped := netip.MustParseAddr("::ffff:203.0.113.7")
	if b, _, err := l.Banned(ctx, mapped); err != nil || !b {
		t.Fatalf("mapped address: Banned = %v, %v", b, err)
	}
}

func TestLimiterBanExpiresAndRepeatsLonger(t *testing.T) {
	srv := redistest.Start(t)
	l := NewLimiter(newTestClient(t, srv), testLimiterConfig())
	ip := netip.MustParseAddr("2001:db8::1")

	// Each ban doubles the last one, up to MaxBanTime.
	for _, want := range []time.Duration{300, 600, 1000, 1000} {
		want *= time.Millisecond
		started := time.Now()
		n, banFor := failUntilBanned(t, l, ip, 100)
		if n != 10 || banFor != want {
			t.Fatalf("ban after %d failures for %v; want 10 and %v", n, banFor, want)
		}
		waitUnbanned(t, l, ip, want+2*time.Second)
		if took := time.Since(started); took < want-50*time.Millisecond {
			t.Fatalf("a %v ban ended after %v", want, took)
		}
	}
	// IPv6 sources are scored by their /64.
	if out, err := srv.CLI("GET", banCountKey(netip.MustParseAddr("2001:db8::"))); err != nil || out != "4\n" {
		t.Fatalf("ban count = %q, %v", out, err)
	}
}

func TestLimiterAllowList(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testLimiterConfig()
	cfg.AllowList = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	l := NewLimiter(newTestClient(t, srv), cfg)
	ctx := context.Background()
	office := netip.MustParseAddr("::ffff:10.1.2.3")

	for i := 0; i < 1000; i++ {
		banned, _, err := l.Failure(ctx, office, "abcdefghijkl")
		if err != nil || banned {
			t.Fatalf("allow-listed source: Failure = %v, %v", banned, err)
		}
	}
	if b, _, err := l.Banned(ctx, office); err != nil || b {
		t.Fatalf("allow-listed source: Banned = %v, %v", b, err)
	}
	if out, _ := srv.CLI("DBSIZE"); out != "0\n" {
		t.Fatalf("allow-listed failures were recorded: DBSIZE %q", out)
	}
}

func TestLimiterSharedAcrossGateways(t *testing.T) {
	srv := redistest.Start(t)
	a := NewLimiter(newTestClient(t, srv), testLimiterConfig())
	b := NewLimiter(newTestClient(t, srv), testLimiterConfig())
	ctx := context.Background()
	ip := netip.MustParseAddr("198.51.100.1")

	for i := 0; i < 5; i++ {
		if _, _, err := a.Failure(ctx, ip, ""); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := failUntilBanned(t, b, ip, 100)
	if n != 5 {
		t.Fatalf("the second gateway banned after %d more failures, want 5", n)
	}
	if banned, _, err := a.Banned(ctx, ip); err != nil || !banned {
		t.Fatalf("the first gateway does not see the ban: %v, %v", banned, err)
	}
}

// Many gateways failing the same source at once start exactly one ban.
func TestLimiterRaceStartsOneBan(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testLimiterConfig()
	cfg.BanTime = time.Minute
	cfg.MaxBanTime = time.Minute
	gateways := []*Limiter{
		NewLimiter(newTestClient(t, srv), cfg),
		NewLimiter(newTestClient(t, srv), cfg),
	}
	ip := netip.MustParseAddr("192.0.2.50")

	// One failure short of the threshold, then everyone at once.
	for i := 0; i < cfg.Threshold-1; i++ {
		if _, _, err := gateways[0].Failure(context.Background(), ip, ""); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	newBans := 0
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 20; g++ {
		wg.Go(func() {
			l := gateways[g%len(gateways)]
			<-start
			for i := 0; i < 5; i++ {
				banned, _, err := l.Failure(context.Background(), ip, "")
				if err != nil {
					t.Error(err)
					return
				}
				if banned {
					mu.Lock()
					newBans++
					mu.Unlock()
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if newBans != 1 {
		t.Fatalf("newlyBanned reported %d times, want once", newBans)
	}
}

func TestLimiterTokenLimited(t *testing.T) {
	srv := redistest.Start(t)
	l := NewLimiter(newTestClient(t, srv), testLimiterConfig())
	ctx := context.Background()
	const id = "3k9w0c2hx1ab"

	// Guesses spread over many sources: no source reaches its threshold.
	for i := 0; i < 20; i++ {
		if limited, err := l.TokenLimited(ctx, id); err != nil || limited {
			t.Fatalf("limited after %d failures: %v, %v", i, limited, err)
		}
		ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		if banned, _, err := l.Failure(ctx, ip, id); err != nil || banned {
			t.Fatalf("Failure = %v, %v", banned, err)
		}
	}
	if limited, err := l.TokenLimited(ctx, id); err != nil || !limited {
		t.Fatalf("not limited after 20 failures: %v, %v", limited, err)
	}
	if limited, err := l.TokenLimited(ctx, "otherid00000"); err != nil || limited {
		t.Fatalf("another token is limited: %v, %v", limited, err)
	}

	// A client-chosen string that is not an ID never becomes a key.
	if _, _, err := l.Failure(ctx, netip.MustParseAddr("192.0.2.99"), "x*y"); err != nil {
		t.Fatal(err)
	}
	if out, _ := srv.CLI("KEYS", "*x*y*"); strings.TrimSpace(out) != "" {
		t.Fatalf("an invalid token ID was stored: %q", out)
	}
}

func TestLimiterListAndUnban(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testLimiterConfig()
	cfg.BanTime = time.Minute
	cfg.MaxBanTime = time.Hour
	l := NewLimiter(newTestClient(t, srv), cfg)
	ctx := context.Background()
	v4 := netip.MustParseAddr("203.0.113.9")
	v6 := netip.MustParseAddr("2001:db8::9")

	if bans, err := l.Bans(ctx); err != nil || len(bans) != 0 {
		t.Fatalf("Bans on an empty Redis = %v, %v", bans, err)
	}
	failUntilBanned(t, l, v6, 100)
	failUntilBanned(t, l, v4, 100)
	bans, err := l.Bans(ctx)
	if err != nil || len(bans) != 2 {
		t.Fatalf("Bans = %v, %v", bans, err)
	}
	if bans[0].Addr != v4 || bans[1].Addr != netip.MustParseAddr("2001:db8::") || bans[0].Count != 1 ||
		bans[0].Remaining <= 0 || bans[0].Remaining > time.Minute {
		t.Fatalf("Bans = %+v", bans)
	}

	if lifted, err := l.Unban(ctx, netip.MustParseAddr("::ffff:203.0.113.9")); err != nil || !lifted {
		t.Fatalf("Unban = %v, %v", lifted, err)
	}
	if lifted, err := l.Unban(ctx, v4); err != nil || lifted {
		t.Fatalf("second Unban = %v, %v", lifted, err)
	}
	if banned, _, _ := l.Banned(ctx, v4); banned {
		t.Fatal("still banned after Unban")
	}
	// A lifted ban is forgiven: the next one is a first ban again.
	if _, banFor := failUntilBanned(t, l, v4, 100); banFor != time.Minute {
		t.Fatalf("ban after Unban lasts %v, want the first ban's 1m", banFor)
	}

	// A ban written by hand without an expiry holds until removed.
	manual := netip.MustParseAddr("192.0.2.1")
	if _, err := srv.CLI("SET", banKey(manual), "1"); err != nil {
		t.Fatal(err)
	}
	if banned, left, err := l.Banned(ctx, manual); err != nil || !banned || left != 0 {
		t.Fatalf("manual ban: Banned = %v, %v, %v", banned, left, err)
	}
}

func TestLimiterRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	l := NewLimiter(newTestClient(t, srv), testLimiterConfig())
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ip := netip.MustParseAddr("192.0.2.1")

	if _, _, err := l.Banned(ctx, ip); err == nil {
		t.Error("Banned: no error with Redis down")
	}
	if _, _, err := l.Failure(ctx, ip, "abcdefghijkl"); err == nil {
		t.Error("Failure: no error with Redis down")
	}
	if _, err := l.TokenLimited(ctx, "abcdefghijkl"); err == nil {
		t.Error("TokenLimited: no error with Redis down")
	}
	if _, err := l.Bans(ctx); err == nil {
		t.Error("Bans: no error with Redis down")
	}
	if _, err := l.Unban(ctx, ip); err == nil {
		t.Error("Unban: no error with Redis down")
	}
	if _, _, err := l.Banned(ctx, netip.Addr{}); err == nil {
		t.Error("Banned accepted an invalid address")
	}
}

// Addresses of one IPv6 /64 are one source: spreading guesses over them
// does not avoid the ban.
func TestLimiterIPv6ByPrefix(t *testing.T) {
	srv := redistest.Start(t)
	l := NewLimiter(newTestClient(t, srv), testLimiterConfig())
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		ip := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i))
		if _, _, err := l.Failure(ctx, ip, ""); err != nil {
			t.Fatal(err)
		}
	}
	banned, _, err := l.Banned(ctx, netip.MustParseAddr("2001:db8:1:2::ffff"))
	if err != nil || !banned {
		t.Fatalf("the /64 is not banned after 10 failures spread over it: %v %v", banned, err)
	}
	if banned, _, _ := l.Banned(ctx, netip.MustParseAddr("2001:db8:1:3::1")); banned {
		t.Fatal("a neighbouring /64 was banned")
	}
}
