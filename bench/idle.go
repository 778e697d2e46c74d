package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// idleResult is case 6: the gateway's memory per authenticated connection
// held open and idle, and for comparison sshd's per idle login.
type idleResult struct {
	Sessions int `json:"sessions"`
	Failures int `json:"failures"`
	// The gateway's VmRSS, in KiB: fresh, with every connection logged in,
	// with a session channel open on each as well, and after closing them.
	BaselineKiB    int64 `json:"baseline_rss_kib"`
	ConnectedKiB   int64 `json:"connected_rss_kib"`
	WithChannelKiB int64 `json:"with_channel_rss_kib"`
	ClosedKiB      int64 `json:"closed_rss_kib"`
	// Per connection: logged in; logged in with a session channel open.
	PerSessionKiB     float64 `json:"per_session_kib"`
	PerWithChannelKiB float64 `json:"per_session_with_channel_kib"`
	// From the gateway's metrics, per connection: goroutines, and the Go
	// heap and stack bytes in use.
	GoroutinesPer float64 `json:"goroutines_per_session"`
	HeapPerKiB    float64 `json:"heap_inuse_per_session_kib"`
	StackPerKiB   float64 `json:"stack_inuse_per_session_kib"`
	// OpenSSH: the PSS of sshd and everything below it, per idle login.
	OpenSSHSessions int     `json:"openssh_sessions"`
	OpenSSHPerKiB   float64 `json:"openssh_pss_per_session_kib"`
	Pass            bool    `json:"pass"`
	Error           string  `json:"error,omitempty"`
}

// caseIdle holds n logged-in connections on a fresh gateway and reads its
// memory before and after; then does the same with m logins to sshd.
func (b *bench) caseIdle(ctx context.Context) *idleResult {
	res := &idleResult{Sessions: b.scale.Idle}
	if err := b.restartGateway(); err != nil {
		res.Error = err.Error()
		return res
	}
	if err := b.idleGateway(ctx, res); err != nil {
		res.Error = err.Error()
	}
	if err := b.idleOpenSSH(ctx, res); err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	res.Pass = res.Error == "" && res.Failures == 0 && res.PerSessionKiB < 100
	return res
}

func (b *bench) idleGateway(ctx context.Context, res *idleResult) error {
	cfg := &gossh.ClientConfig{
		User:            "bench",
		Auth:            []gossh.AuthMethod{gossh.Password(b.token)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	}
	pid := b.gw.pid()
	settle := func() { time.Sleep(2 * time.Second) }

	settle()
	before, _ := b.scrape(ctx)
	res.BaselineKiB, _ = statusKiB(pid, "VmRSS")

	clients, failed, err := dialMany(ctx, fmt.Sprintf("127.0.0.1:%d", b.gwPort), cfg,
		res.Sessions)
	defer closeAll(clients)
	res.Failures = failed
	if err != nil && len(clients) == 0 {
		return err
	}
	n := float64(len(clients))
	settle()
	after, _ := b.scrape(ctx)
	res.ConnectedKiB, _ = statusKiB(pid, "VmRSS")
	res.PerSessionKiB = float64(res.ConnectedKiB-res.BaselineKiB) / n
	res.GoroutinesPer = (after["go_goroutines"] - before["go_goroutines"]) / n
	res.HeapPerKiB = (after["go_memstats_heap_inuse_bytes"] -
		before["go_memstats_heap_inuse_bytes"]) / 1024 / n
	res.StackPerKiB = (after["go_memstats_stack_inuse_bytes"] -
		before["go_memstats_stack_inuse_bytes"]) / 1024 / n

	// An idle session channel on each, as a client holds before its exec.
	var sessions []*gossh.Session
	for _, c := range clients {
		if s, err := c.NewSession(); err == nil {
			sessions = append(sessions, s)
		}
	}
	settle()
	res.WithChannelKiB, _ = statusKiB(pid, "VmRSS")
	res.PerWithChannelKiB = float64(res.WithChannelKiB-res.BaselineKiB) / n
	for _, s := range sessions {
		_ = s.Close()
	}
	closeAll(clients)
	clients = nil
	settle()
	res.ClosedKiB, _ = statusKiB(pid, "VmRSS")
	return err
}

func (b *bench) idleOpenSSH(ctx context.Context, res *idleResult) error {
	key, err := os.ReadFile(b.sshKey)
	if err != nil {
		return err
	}
	signer, err := gossh.ParsePrivateKey(key)
	if err != nil {
		return err
	}
	cfg := &gossh.ClientConfig{
		User:            "root",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	}
	pid := b.sshd.pid()
	before := treeKiB(pid, "Pss")
	clients, _, err := dialMany(ctx, fmt.Sprintf("127.0.0.1:%d", b.sshPort), cfg,
		b.scale.SSHIdle)
	defer closeAll(clients)
	if len(clients) == 0 {
		return err
	}
	time.Sleep(2 * time.Second)
	res.OpenSSHSessions = len(clients)
	res.OpenSSHPerKiB = float64(treeKiB(pid, "Pss")-before) / float64(len(clients))
	return nil
}

// dialMany logs n clients in, 16 at a time, each under its own deadline.
func dialMany(ctx context.Context, addr string, cfg *gossh.ClientConfig,
	n int) ([]*gossh.Client, int, error) {
	var (
		mu      sync.Mutex
		clients []*gossh.Client
		failed  int
		first   error
		next    int
		wg      sync.WaitGroup
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				mu.Lock()
				if next >= n {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				c, err := dialOne(addr, cfg)
				mu.Lock()
				if err != nil {
					failed++
					if first == nil {
						first = err
					}
				} else {
					clients = append(clients, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		first = fmt.Errorf("%d of %d logins failed; first: %w", failed, n, first)
	}
	return clients, failed, first
}

func dialOne(addr string, cfg *gossh.ClientConfig) (*gossh.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, chans, reqs, err := gossh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return gossh.NewClient(c, chans, reqs), nil
}

func closeAll(clients []*gossh.Client) {
	for _, c := range clients {
		_ = c.Close()
	}
}
