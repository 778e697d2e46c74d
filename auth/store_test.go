package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/internal/redistest"
)

func newTestStore(t *testing.T) (*Store, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second,
		ReadTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return NewStore(rdb), srv
}

func storeToken(t *testing.T, s *Store, ttl time.Duration) (Token, Record) {
	t.Helper()
	tok, _ := NewToken()
	now := time.Now()
	rec := Record{ID: tok.ID, SecretHash: HashSecret(tok.Secret), Scopes: ScopeRead,
		Root: "r", ExpiresAt: now.Add(ttl), CreatedAt: now, Note: "n"}
	if err := s.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return tok, rec
}

func reasonOf(err error) audit.Reason {
	var d *audit.Denial
	if errors.As(err, &d) {
		return d.Reason
	}
	return ""
}

func TestVerifyStates(t *testing.T) {
	s, srv := newTestStore(t)
	v := &Verifier{Store: s, Timeout: time.Second}
	ctx := context.Background()

	live, _ := storeToken(t, s, time.Hour)
	if rec, err := v.Verify(ctx, live.String(), "tester"); err != nil || rec.Root != "r" || rec.Scopes != ScopeRead {
		t.Fatalf("live token: %v %v", rec, err)
	}

	wrong := Token{ID: live.ID, Secret: "x" + live.Secret[1:]}
	if _, err := v.Verify(ctx, wrong.String(), "tester"); reasonOf(err) != audit.ReasonSecretMismatch {
		t.Fatalf("wrong secret: %v", err)
	}

	unknown, _ := NewToken()
	if _, err := v.Verify(ctx, unknown.String(), "tester"); reasonOf(err) != audit.ReasonTokenUnknown {
		t.Fatalf("unknown token: %v", err)
	}

	deleted, _ := storeToken(t, s, time.Hour)
	if out, err := srv.CLI("DEL", TokenKey(deleted.ID)); err != nil || out != "1\n" {
		t.Fatalf("DEL: %q %v", out, err)
	}
	if _, err := v.Verify(ctx, deleted.String(), "tester"); reasonOf(err) != audit.ReasonTokenRevoked {
		t.Fatalf("token removed with DEL: %v", err)
	}

	revoked, _ := storeToken(t, s, time.Hour)
	if ok, err := s.Revoke(ctx, revoked.ID, time.Now()); !ok || err != nil {
		t.Fatalf("Revoke: %v %v", ok, err)
	}
	if _, err := v.Verify(ctx, revoked.String(), "tester"); reasonOf(err) != audit.ReasonTokenRevoked {
		t.Fatalf("revoked token: %v", err)
	}

	// The stored expiry decides even before Redis drops the key.
	expired, _ := storeToken(t, s, time.Hour)
	v.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := v.Verify(ctx, expired.String(), "tester"); reasonOf(err) != audit.ReasonTokenExpired {
		t.Fatalf("expired token: %v", err)
	}
	v.Now = nil

	// Redis TTL ends the token key at the expiry; meta says why.
	short, _ := storeToken(t, s, 300*time.Millisecond)
	time.Sleep(600 * time.Millisecond)
	if out, _ := srv.CLI("EXISTS", TokenKey(short.ID)); out != "0\n" {
		t.Fatalf("token key outlived its TTL: %q", out)
	}
	if _, err := v.Verify(ctx, short.String(), "tester"); reasonOf(err) != audit.ReasonTokenExpired {
		t.Fatalf("token whose key expired: %v", err)
	}

	states, err := s.States(ctx, []string{live.ID, deleted.ID, revoked.ID, short.ID}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]State{live.ID: StateLive, deleted.ID: StateRevoked,
		revoked.ID: StateRevoked, short.ID: StateExpired}
	for id, st := range want {
		if states[id] != st {
			t.Errorf("States[%s] = %v, want %v", id, states[id], st)
		}
	}
}

// With Redis gone a login is refused as backend_unavailable within the
// timeout, and works again once Redis is back.
func TestVerifyFailsClosed(t *testing.T) {
	s, srv := newTestStore(t)
	v := &Verifier{Store: s, Timeout: 500 * time.Millisecond}
	tok, rec := storeToken(t, s, time.Hour)

	srv.Stop()
	start := time.Now()
	_, err := v.Verify(context.Background(), tok.String(), "tester")
	if reasonOf(err) != audit.ReasonBackendUnavailable {
		t.Fatalf("Redis down: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("refusal took %v", time.Since(start))
	}

	srv.Restart()
	if err := s.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok.String(), "tester"); err != nil {
		t.Fatalf("after Redis returned: %v", err)
	}
}

func TestListNeverHoldsSecrets(t *testing.T) {
	s, _ := newTestStore(t)
	a, _ := storeToken(t, s, 2*time.Hour)
	b, _ := storeToken(t, s, time.Hour)
	recs, err := s.List(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].ID != b.ID || recs[1].ID != a.ID {
		t.Fatalf("List = %+v, want b then a", recs)
	}
	for _, r := range recs {
		if r.SecretHash == a.Secret || r.SecretHash == b.Secret {
			t.Fatal("a record carries a secret")
		}
	}
}

// A revocation published by one client reaches a feed within a second.
func TestFeedSeesRevocationAndDel(t *testing.T) {
	s, srv := newTestStore(t)
	tok, _ := storeToken(t, s, time.Hour)
	tok2, _ := storeToken(t, s, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	got := make(chan string, 8)
	f := &Feed{Store: s, Interval: 100 * time.Millisecond, Log: audit.NewLogger(testWriter{t}, "text")}
	go f.Run(ctx, func() []string { return []string{tok2.ID} }, func(id string, st State) {
		if st == StateRevoked {
			got <- id
		}
	})
	time.Sleep(200 * time.Millisecond) // let the subscription settle

	if _, err := s.Revoke(ctx, tok.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitID(t, got, tok.ID)
	if _, err := srv.CLI("DEL", TokenKey(tok2.ID)); err != nil {
		t.Fatal(err)
	}
	waitID(t, got, tok2.ID)
}

func waitID(t *testing.T, got chan string, want string) {
	t.Helper()
	deadline := time.After(time.Second)
	for {
		select {
		case id := <-got:
			if id == want {
				return
			}
		case <-deadline:
			t.Fatalf("no revocation of %s within 1s", want)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
