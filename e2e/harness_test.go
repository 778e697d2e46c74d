// Package e2e drives the real rsync, ssh and sshpass clients against a real
// gateway process and a real redis-server, both started by the tests on free
// loopback ports.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/redistest"
	"github.com/tokengate/tokengate/internal/syslogtest"
)

// gatewayBin is the gateway binary built once for the whole suite.
var gatewayBin string

func TestMain(m *testing.M) {
	for _, tool := range []string{"rsync", "ssh", "sshpass", "redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s is missing; `make test` installs it (scripts/deps.sh)\n", tool)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "tokengate-e2e-bin-")
	if err != nil {
		panic(err)
	}
	gatewayBin = filepath.Join(dir, "gateway")
	build := exec.Command("go", "build", "-o", gatewayBin, "../cmd/gateway")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the gateway:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t testing.TB) int { return redistest.FreePort(t) }

// gateway is a running `gateway serve` process whose JSON log is collected.
type gateway struct {
	t        testing.TB
	redis    *redistest.Server
	port     int
	dataDir  string
	stateDir string
	cmd      *exec.Cmd

	mu    sync.Mutex
	lines []string
	ready chan struct{}
}

type gatewayOption func(args []string) []string

// withArgs adds flags to `gateway serve`; a later flag wins over an earlier one.
func withArgs(extra ...string) gatewayOption {
	return func(args []string) []string { return append(args, extra...) }
}

func startGateway(t testing.TB, r *redistest.Server, opts ...gatewayOption) *gateway {
	t.Helper()
	base := t.TempDir()
	g := &gateway{
		t: t, redis: r, port: freePort(t),
		dataDir:  filepath.Join(base, "data"),
		stateDir: filepath.Join(base, "state"),
		ready:    make(chan struct{}),
	}
	// Every gateway ships its events to a syslog collector, and every denial
	// it logs must arrive there too (checked when the test ends).
	collector := syslogtest.StartStream(t, "127.0.0.1:0", nil)
	shipped := collectSyslog(collector)
	args := []string{"serve",
		"--syslog", "tcp://" + collector.Addr,
		"--listen", fmt.Sprintf("127.0.0.1:%d", g.port),
		"--redis", r.URL(), "--redis-timeout", "1s",
		"--data-dir", g.dataDir, "--state-dir", g.stateDir,
	}
	for _, o := range opts {
		args = o(args)
	}
	// A test that names its own collector checks it itself.
	ownCollector := strings.Count(strings.Join(args, " "), "--syslog ") > 1
	g.cmd = exec.Command(gatewayBin, args...)
	stdout, err := g.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	g.cmd.Stderr = &stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go g.collect(stdout)
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = g.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
			<-done
		}
		if events := shipped(); !ownCollector {
			g.checkShipped(events)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s\ngateway stderr:\n%s", strings.Join(g.logLines(), "\n"), stderr.String())
		}
	})
	select {
	case <-g.ready:
	case <-time.After(15 * time.Second):
		t.Fatalf("gateway not ready within 15s; stderr: %s", stderr.String())
	}
	return g
}

// collectSyslog gathers what a collector receives; the returned function
// stops gathering and returns the JSON events, decoded.
func collectSyslog(r *syslogtest.Receiver) func() []event {
	var mu sync.Mutex
	var got []event
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := r.Next(100 * time.Millisecond)
			if err != nil || m.Message == nil {
				continue
			}
			var e event
			if json.Unmarshal([]byte(*m.Message), &e) == nil {
				mu.Lock()
				got = append(got, e)
				mu.Unlock()
			}
		}
	}()
	return func() []event {
		// The gateway flushed its queue on shutdown; give the collector a
		// moment to parse the last frames.
		time.Sleep(200 * time.Millisecond)
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return got
	}
}

// checkShipped fails the test unless every denial in the log also reached
// the syslog collector with the same action and reason.
func (g *gateway) checkShipped(shipped []event) {
	key := func(e event) string {
		return fmt.Sprint(e["event.action"], "|", e["event.reason"], "|", e["source.port"], "|",
			e["session.id"], "|", e["token.id"])
	}
	have := map[string]int{}
	for _, e := range shipped {
		have[key(e)]++
	}
	for _, action := range []string{"auth.denied", "command.denied", "source.banned"} {
		for _, e := range g.events(action) {
			if have[key(e)] == 0 {
				g.t.Errorf("denial not shipped to syslog: %s", key(e))
				continue
			}
			have[key(e)]--
		}
	}
}

func (g *gateway) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	once := sync.Once{}
	for sc.Scan() {
		line := sc.Text()
		g.mu.Lock()
		g.lines = append(g.lines, line)
		g.mu.Unlock()
		if strings.Contains(line, `"gateway.ready"`) {
			once.Do(func() { close(g.ready) })
		}
	}
}

func (g *gateway) logLines() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.lines...)
}

// event is one decoded log line.
type event map[string]any

func (e event) str(k string) string { s, _ := e[k].(string); return s }

// events returns the decoded log lines whose event.action is action.
func (g *gateway) events(action string) []event {
	var out []event
	for _, line := range g.logLines() {
		var e event
		if json.Unmarshal([]byte(line), &e) != nil {
			g.t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if e.str("event.action") == action {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits until an event with action matches every field in want.
func (g *gateway) waitEvent(action string, want map[string]string) event {
	g.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, e := range g.events(action) {
			ok := true
			for k, v := range want {
				if fmt.Sprint(e[k]) != v {
					ok = false
					break
				}
			}
			if ok {
				return e
			}
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("no %s event with %v; log:\n%s", action, want,
				strings.Join(g.logLines(), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createToken runs `gateway token create` and returns the printed token.
func (g *gateway) createToken(root, scopes string, ttl time.Duration) string {
	g.t.Helper()
	cmd := exec.Command(gatewayBin, "token", "create", "--redis", g.redis.URL(),
		"--root", root, "--scope", scopes, "--ttl", ttl.String(), "--note", "e2e")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		g.t.Fatalf("token create: %v: %s", err, stderr.String())
	}
	tok := strings.TrimSpace(string(out))
	if !strings.HasPrefix(tok, "tg_") || strings.Contains(tok, "\n") {
		g.t.Fatalf("token create printed %q, want the token alone", tok)
	}
	return tok
}

// root is the host path of a token root.
func (g *gateway) root(rel string) string { return filepath.Join(g.dataDir, rel) }

// sshOpts are the client options every test uses: no host key prompts, no
// local keys or agent, loopback only.
func (g *gateway) sshOpts() []string {
	return []string{"-p", strconv.Itoa(g.port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "PubkeyAuthentication=no", "-o", "IdentityAgent=none",
		"-o", "ConnectTimeout=10"}
}

// result is what a client run left behind.
type result struct {
	code   int
	stdout string
	stderr string
}

func runCmd(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish within 60s; stderr: %s", cmd.Args, stderr.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// rsync runs the real rsync client with the token supplied through sshpass.
func (g *gateway) rsync(token string, args ...string) result {
	g.t.Helper()
	sshCmd := "sshpass -e ssh " + strings.Join(g.sshOpts(), " ") +
		" -o PreferredAuthentications=password,keyboard-interactive"
	cmd := exec.Command("rsync", append([]string{"-e", sshCmd}, args...)...)
	cmd.Env = append(os.Environ(), "SSHPASS="+token)
	return runCmd(g.t, cmd)
}

// ssh runs the real ssh client with the token through sshpass.
func (g *gateway) ssh(token string, extra ...string) result {
	g.t.Helper()
	args := append([]string{"-e", "ssh"}, g.sshOpts()...)
	args = append(args, "-o", "PreferredAuthentications=password,keyboard-interactive")
	args = append(args, extra...)
	cmd := exec.Command("sshpass", args...)
	cmd.Env = append(os.Environ(), "SSHPASS="+token)
	cmd.Stdin = strings.NewReader("")
	return runCmd(g.t, cmd)
}

// remote is the rsync remote spec for a path on the gateway.
func (g *gateway) remote(path string) string { return "tester@127.0.0.1:" + path }

// writeTree creates files (name -> content) under dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// jailUID and jailGID are the gateway's defaults: what jailed rsync runs as.
const jailUID, jailGID = 64050, 64050

// seed puts files into a token root as an admin would: written on the host,
// then handed to the jail's uid so that pushes can change them.
func (g *gateway) seed(rel string, files map[string]string) {
	g.t.Helper()
	writeTree(g.t, g.root(rel), files)
	err := filepath.Walk(g.dataDir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, jailUID, jailGID)
	})
	if err != nil {
		g.t.Fatal(err)
	}
}

// readTree returns every regular file under dir (relative name -> content).
func readTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			out[rel] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t testing.TB, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d files, want %d: %v", len(got), len(want), keys(got))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Fatalf("missing %s", name)
		} else if g != w {
			t.Fatalf("%s differs: %d bytes, want %d", name, len(g), len(w))
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
