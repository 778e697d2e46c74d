package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/internal/redistest"
	"github.com/tokengate/tokengate/session"
)

func TestMain(m *testing.M) {
	if session.IsJailChild() {
		session.RunJailChild()
	}
	os.Exit(m.Run())
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testServer struct {
	srv     *Server
	addr    *net.TCPAddr
	store   *auth.Store
	dataDir string
	log     *syncBuffer
}

// startServer runs the front door in this process (so the race detector
// sees the pump, the registry and the auth path) with a real jail and a
// real redis-server.
func startServer(t *testing.T) *testServer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the jail needs root")
	}
	for _, tool := range []string{"rsync", "sshpass", "ssh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing; `make test` installs it", tool)
		}
	}
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { rdb.Close() })
	store := auth.NewStore(rdb)
	base := t.TempDir()
	state := filepath.Join(base, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	jail, err := session.NewJail(session.JailConfig{RsyncPath: "/usr/bin/rsync", StateDir: state,
		UID: 64125, GID: 64125})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := LoadOrCreateHostKey(state)
	if err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	ts := &testServer{store: store, dataDir: filepath.Join(base, "data"), log: log}
	if err := os.MkdirAll(ts.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ts.srv = New(Config{
		HostSigner: signer, Store: store, Jail: jail, DataDir: ts.dataDir,
		Verifier:     &auth.Verifier{Store: store, Timeout: time.Second},
		Events:       audit.NewEmitter(audit.NewLogger(log, "json")),
		FailureDelay: -1,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().(*net.TCPAddr)
	go func() { _ = ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ts.srv.Shutdown(ctx)
	})
	return ts
}

func (ts *testServer) token(t *testing.T, root string, scopes auth.Scope) string {
	t.Helper()
	tok, _ := auth.NewToken()
	now := time.Now()
	err := ts.store.Create(context.Background(), auth.Record{ID: tok.ID,
		SecretHash: auth.HashSecret(tok.Secret), Scopes: scopes, Root: root,
		ExpiresAt: now.Add(time.Hour), CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

func (ts *testServer) rsync(token string, args ...string) *exec.Cmd {
	ssh := fmt.Sprintf("sshpass -e ssh -p %d -o StrictHostKeyChecking=no "+
		"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR", ts.addr.Port)
	cmd := exec.Command("rsync", append([]string{"-e", ssh}, args...)...)
	cmd.Env = append(os.Environ(), "SSHPASS="+token)
	return cmd
}

// Concurrent pushes and pulls on one token, then a cut of every session
// of that token: the whole path runs under the race detector.
func TestConcurrentSessionsAndCut(t *testing.T) {
	ts := startServer(t)
	tok := ts.token(t, "race", auth.ScopeRead|auth.ScopeWrite)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f.bin"), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			dst := fmt.Sprintf("tester@127.0.0.1:d%d/", i)
			if out, err := ts.rsync(tok, "-a", src+"/", dst).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("push %d: %v: %s", i, err, out)
				return
			}
			back := t.TempDir()
			if out, err := ts.rsync(tok, "-a", dst, back+"/").CombinedOutput(); err != nil {
				errs <- fmt.Errorf("pull %d: %v: %s", i, err, out)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A slow pull, cut through the registry as the revocation feed does.
	slow := ts.rsync(tok, "-a", "--bwlimit=64", "tester@127.0.0.1:d0/f.bin", t.TempDir()+"/")
	var stderr bytes.Buffer
	slow.Stderr = &stderr
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.Live().Count() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	id := strings.Split(tok, "_")[1]
	if cut := ts.srv.Live().Cut(id, "token "+id+" was revoked"); len(cut) != 1 {
		t.Fatalf("cut %d sessions, want 1", len(cut))
	}
	if err := slow.Wait(); err == nil {
		t.Fatal("the cut pull finished")
	}
	if !strings.Contains(stderr.String(), "was revoked") {
		t.Fatalf("client did not see the cut: %s", stderr.String())
	}
}

func TestPendingLoginsCap(t *testing.T) {
	p := newPendingLogins(3, 2, nil)
	a := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	b := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1}
	r1, ok1 := p.enter(a)
	_, ok2 := p.enter(a)
	_, ok3 := p.enter(a)
	_, ok4 := p.enter(b)
	_, ok5 := p.enter(b)
	if !ok1 || !ok2 || ok3 || !ok4 || ok5 {
		t.Fatalf("admissions %v %v %v %v %v; want per-source 2 and total 3", ok1, ok2, ok3, ok4, ok5)
	}
	r1()
	r1() // a second release must not free a second place
	if _, ok := p.enter(a); !ok {
		t.Fatal("a released place was not reused")
	}
	if _, ok := p.enter(b); ok {
		t.Fatal("the total cap was not kept after a double release")
	}
}

func TestRoundLeft(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5*time.Hour + 12*time.Minute + 20*time.Second: "5h12m",
		42 * time.Second: "42s",
		3 * time.Hour:    "3h",
	} {
		if got := roundLeft(d); got != want {
			t.Errorf("roundLeft(%v) = %q, want %q", d, got, want)
		}
	}
}
