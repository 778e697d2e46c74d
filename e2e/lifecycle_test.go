package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/internal/redistest"
)

func tokenID(t *testing.T, token string) string {
	t.Helper()
	tok, err := auth.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	return tok.ID
}

// startSlowPull starts a pull of a large file throttled to last several
// seconds, and returns a channel that yields its result.
func startSlowPull(t *testing.T, g *gateway, token, remote string) (<-chan result, *exec.Cmd) {
	sshCmd := "sshpass -e ssh " + strings.Join(g.sshOpts(), " ") +
		" -o PreferredAuthentications=password"
	dst := t.TempDir()
	cmd := exec.Command("rsync", "-a", "--bwlimit=512", "-e", sshCmd, g.remote(remote), dst+"/")
	cmd.Env = append(os.Environ(), "SSHPASS="+token)
	out := make(chan result, 1)
	go func() { out <- runCmd(t, cmd) }()
	return out, cmd
}

// waitSessionStart waits until the gateway runs a session for the token.
func waitSessionStart(g *gateway, id string) {
	g.waitEvent("session.start", map[string]string{"token.id": id})
	time.Sleep(300 * time.Millisecond) // let bytes flow
}

// Revoking a token with the CLI or with a raw DEL cuts its live transfer
// within a second; the client sees why and rsync fails.
func TestRevocationCutsLiveTransfers(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("big", map[string]string{"blob.bin": randomBytes(t, 8<<20)})

	for _, how := range []string{"cli", "del"} {
		t.Run(how, func(t *testing.T) {
			tok := g.createToken("big", "read", time.Hour)
			id := tokenID(t, tok)
			done, _ := startSlowPull(t, g, tok, "blob.bin")
			waitSessionStart(g, id)

			revokedAt := time.Now()
			if how == "cli" {
				out, err := exec.Command(gatewayBin, "token", "revoke", "--redis", r.URL(), id).CombinedOutput()
				if err != nil {
					t.Fatalf("token revoke: %v %s", err, out)
				}
			} else if _, err := r.CLI("DEL", auth.TokenKey(id)); err != nil {
				t.Fatal(err)
			}
			res := <-done
			took := time.Since(revokedAt)
			if res.code == 0 {
				t.Fatal("rsync finished although its token was revoked")
			}
			if took > 1500*time.Millisecond {
				t.Errorf("rsync ended %v after the revocation, want about 1s at most", took)
			}
			if !strings.Contains(res.stderr, "tokengate: token "+id+" was revoked") {
				t.Errorf("client did not see the revocation:\n%s", res.stderr)
			}
			e := g.waitEvent("token.revoked", map[string]string{"token.id": id})
			if ids, _ := e["session.ids"].([]any); len(ids) != 1 {
				t.Errorf("token.revoked lists %v, want one session", e["session.ids"])
			}
		})
	}
}

// Two gateways share one Redis: a revocation through one cuts a session on
// the other, and --max-sessions counts across both.
func TestTwoGateways(t *testing.T) {
	r := redistest.Start(t)
	g1 := startGateway(t, r)
	// A fleet shares its storage as it shares its Redis.
	g2 := startGateway(t, r, withArgs("--data-dir", g1.dataDir))
	g2.dataDir = g1.dataDir
	g1.seed("big", map[string]string{"blob.bin": randomBytes(t, 8<<20)})

	tok := g1.createToken("big", "read", time.Hour)
	id := tokenID(t, tok)
	done, _ := startSlowPull(t, g1, tok, "blob.bin")
	waitSessionStart(g1, id)
	// The revocation is published by the CLI; the gateway that holds the
	// session is not the one anyone talked to.
	if out, err := exec.Command(gatewayBin, "token", "revoke", "--redis", r.URL(), id).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if res := <-done; res.code == 0 || !strings.Contains(res.stderr, "was revoked") {
		t.Fatalf("session on gateway 1 survived: exit %d %s", res.code, res.stderr)
	}

	// --max-sessions 1: a second concurrent login on the other gateway is refused.
	capped := createTokenArgs(t, g1, "--root", "big", "--scope", "read", "--max-sessions", "1")
	cid := tokenID(t, capped)
	done, _ = startSlowPull(t, g1, capped, "blob.bin")
	waitSessionStart(g1, cid)
	res := g2.rsync(capped, "-a", g2.remote("blob.bin"), t.TempDir()+"/")
	expectRefused(t, res, "live session(s), its limit")
	g2.waitEvent("auth.denied", map[string]string{"event.reason": "session_limit", "token.id": cid})
	if _, err := r.CLI("DEL", auth.TokenKey(cid)); err != nil {
		t.Fatal(err)
	}
	<-done
}

// createTokenArgs runs `gateway token create` with extra flags.
func createTokenArgs(t *testing.T, g *gateway, args ...string) string {
	t.Helper()
	all := append([]string{"token", "create", "--redis", g.redis.URL()}, args...)
	out, err := exec.Command(gatewayBin, all...).Output()
	if err != nil {
		t.Fatalf("token create %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// A single-use token survives a race of 20 concurrent logins with exactly
// one winner.
func TestSingleUseRace(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("one", map[string]string{"f.txt": "once\n"})
	tok := createTokenArgs(t, g, "--root", "one", "--scope", "read", "--single-use")

	var wg sync.WaitGroup
	results := make([]result, 20)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = g.rsync(tok, "-a", g.remote("f.txt"), t.TempDir()+"/")
		}(i)
	}
	wg.Wait()
	wins, spent := 0, 0
	for _, res := range results {
		if res.code == 0 {
			wins++
		} else if strings.Contains(res.stderr, "single-use and is spent") {
			spent++
		}
	}
	if wins != 1 || spent != 19 {
		t.Fatalf("%d logins won and %d were told the token is spent; want 1 and 19", wins, spent)
	}
}

// A token with the issue scope mints a child over the same SSH port; the
// child works, cannot exceed its parent, and dies with it.
func TestIssueChildTokens(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("proj", map[string]string{"sub/f.txt": "child\n", "top.txt": "top\n"})
	parent := g.createToken("proj", "read,write,issue", time.Hour)
	pid := tokenID(t, parent)

	res := g.ssh(parent, "tester@127.0.0.1", "token issue --ttl 10m --scope read --root sub --json")
	if res.code != 0 {
		t.Fatalf("token issue: exit %d: %s", res.code, res.stderr)
	}
	var minted struct {
		Token, ID, Parent, Root string
	}
	if err := json.Unmarshal([]byte(res.stdout), &minted); err != nil {
		t.Fatalf("token issue --json printed %q: %v", res.stdout, err)
	}
	if minted.Parent != pid || minted.Root != "proj/sub" {
		t.Fatalf("minted %+v", minted)
	}
	g.waitEvent("token.issued", map[string]string{"token.id": minted.ID, "token.parent.id": pid})

	dst := t.TempDir()
	if res := g.rsync(minted.Token, "-a", g.remote("/"), dst+"/"); res.code != 0 {
		t.Fatalf("pull with the child: exit %d: %s", res.code, res.stderr)
	}
	sameTree(t, readTree(t, dst), map[string]string{"f.txt": "child\n"})
	src := t.TempDir()
	writeTree(t, src, map[string]string{"x": "x"})
	expectRefused(t, g.rsync(minted.Token, "-a", src+"/", g.remote("/")), "lacks write scope")

	for _, ask := range []string{
		"token issue --scope read,delete",
		"token issue --ttl 3h",
		"token issue --root ../other",
	} {
		res := g.ssh(parent, "tester@127.0.0.1", ask)
		if res.code == 0 || !strings.Contains(res.stderr, "tokengate:") {
			t.Errorf("%q was granted: %s %s", ask, res.stdout, res.stderr)
		}
	}
	g.waitEvent("command.denied", map[string]string{"event.reason": "issue_forbidden"})
	expectRefused(t, g.ssh(minted.Token, "tester@127.0.0.1", "token issue"), "lacks issue scope")

	if _, err := r.CLI("DEL", auth.TokenKey(pid)); err != nil {
		t.Fatal(err)
	}
	expectRefused(t, g.rsync(minted.Token, "-a", g.remote("/"), t.TempDir()+"/"), "was revoked")
}

// A token in the last part of its life warns the client and the log.
func TestExpiryWarning(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("w", map[string]string{"f": "f\n"})
	// Make a 1h token look 55 minutes old: 5 minutes left, inside the last 20%.
	tok := g.createToken("w", "read", time.Hour)
	id := tokenID(t, tok)
	until := time.Now().Add(5 * time.Minute)
	born := time.Now().Add(-55 * time.Minute)
	if _, err := r.CLI("HSET", auth.TokenKey(id), "expires_at", until.UTC().Format(time.RFC3339),
		"created_at", born.UTC().Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	res := g.rsync(tok, "-a", g.remote("f"), t.TempDir()+"/")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, "tokengate: warning: token "+id+" expires in ") {
		t.Fatalf("no expiry warning:\n%s", res.stderr)
	}
	g.waitEvent("token.expiring", map[string]string{"token.id": id})

	// A fresh token is not warned about.
	fresh := g.createToken("w", "read", time.Hour)
	if res := g.rsync(fresh, "-a", g.remote("f"), t.TempDir()+"/"); strings.Contains(res.stderr, "warning") {
		t.Fatalf("fresh token warned:\n%s", res.stderr)
	}
}

// A killed client leaves no rsync behind.
func TestKilledClientLeavesNothing(t *testing.T) {
	r := redistest.Start(t)
	// A uid of its own, so that no other gateway's rsync is counted.
	const uid = 64123
	g := startGateway(t, r, withArgs("--jail-uid", itoa(uid), "--jail-gid", itoa(uid)))
	g.seed("k", map[string]string{"blob.bin": randomBytes(t, 8<<20)})
	tok := g.createToken("k", "read", time.Hour)
	done, cmd := startSlowPull(t, g, tok, "blob.bin")
	waitSessionStart(g, tokenID(t, tok))
	// Kill the whole client side: rsync and the ssh it started.
	_ = exec.Command("pkill", "-KILL", "-f", "sshpass -e ssh .*-p "+itoa(g.port)).Run()
	_ = cmd.Process.Kill()
	<-done
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := processesOf(uid)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the jail uid still run 2s after the client died", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.waitEvent("session.end", map[string]string{"token.id": tokenID(t, tok)})
}

// processesOf counts processes running as uid.
func processesOf(uid int) int {
	entries, _ := filepath.Glob("/proc/[0-9]*/status")
	n := 0
	for _, p := range entries {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[1] == itoa(uid) {
				n++
			}
		}
	}
	return n
}

// A push cut by revocation leaves the original file whole under its name
// and no temporary file behind.
func TestRevokedPushKeepsOriginal(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	original := randomBytes(t, 1<<20)
	g.seed("p", map[string]string{"blob.bin": original})
	src := t.TempDir()
	writeTree(t, src, map[string]string{"blob.bin": randomBytes(t, 8<<20)})
	tok := g.createToken("p", "write", time.Hour)
	id := tokenID(t, tok)

	sshCmd := "sshpass -e ssh " + strings.Join(g.sshOpts(), " ")
	cmd := exec.Command("rsync", "-a", "--bwlimit=512", "-e", sshCmd, src+"/blob.bin", g.remote("blob.bin"))
	cmd.Env = append(os.Environ(), "SSHPASS="+tok)
	done := make(chan result, 1)
	go func() { done <- runCmd(t, cmd) }()
	waitSessionStart(g, id)
	if out, err := exec.Command(gatewayBin, "token", "revoke", "--redis", r.URL(), id).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if res := <-done; res.code == 0 {
		t.Fatal("push finished although its token was revoked")
	}
	g.waitEvent("session.end", map[string]string{"token.id": id})
	got := readTree(t, g.root("p"))
	if len(got) != 1 || got["blob.bin"] != original {
		t.Fatalf("after the cut the root holds %v; want only the untouched original", keys(got))
	}
}

// A session that moves nothing for --idle-timeout is cut.
func TestIdleSessionIsCut(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r, withArgs("--idle-timeout", "1s"))
	g.seed("i", map[string]string{"f": "f\n"})
	tok := g.createToken("i", "read", time.Hour)

	args := append([]string{"-e", "ssh"}, g.sshOpts()...)
	args = append(args, "tester@127.0.0.1", "rsync --server --sender -e.LsfxCIvu . f")
	cmd := exec.Command("sshpass", args...)
	cmd.Env = append(os.Environ(), "SSHPASS="+tok)
	stdin, err := cmd.StdinPipe() // held open and silent
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	start := time.Now()
	res := runCmd(t, cmd)
	if res.code == 0 || !strings.Contains(res.stderr, "tokengate: session idle for 1s") {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("idle session lasted %v", took)
	}
	g.waitEvent("session.end", map[string]string{"event.reason": "session_cut"})
}

// Stopping the gateway ends every live session and leaves no rsync behind.
func TestShutdownEndsSessions(t *testing.T) {
	r := redistest.Start(t)
	const uid = 64124
	g := startGateway(t, r, withArgs("--jail-uid", itoa(uid), "--jail-gid", itoa(uid)))
	g.seed("s", map[string]string{"blob.bin": randomBytes(t, 8<<20)})
	tok := g.createToken("s", "read", time.Hour)
	done, _ := startSlowPull(t, g, tok, "blob.bin")
	waitSessionStart(g, tokenID(t, tok))

	if err := g.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.code == 0 || !strings.Contains(res.stderr, "tokengate: the gateway is shutting down") {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	deadline := time.Now().Add(2 * time.Second)
	for processesOf(uid) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d jailed processes outlived the gateway's shutdown", processesOf(uid))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killPushMidway starts a throttled push and SIGKILLs the client side once
// the gateway has received a good part of it.
func killPushMidway(t *testing.T, g *gateway, token, src, dest string, extra ...string) {
	sshCmd := "sshpass -e ssh " + strings.Join(g.sshOpts(), " ")
	args := append([]string{"-a", "--bwlimit=2048", "-e", sshCmd}, extra...)
	cmd := exec.Command("rsync", append(args, src, g.remote(dest))...)
	cmd.Env = append(os.Environ(), "SSHPASS="+token)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	done := make(chan result, 1)
	go func() { done <- runCmd(t, cmd) }()
	waitSessionStart(g, tokenID(t, token))
	time.Sleep(1500 * time.Millisecond)
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	g.waitEvent("session.end", map[string]string{"token.id": tokenID(t, token)})
}

// An interrupted push leaves no truncated file under its final name; with
// --partial the rerun resumes and sends less than the whole file.
func TestInterruptedPushes(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	src := t.TempDir()
	content := randomBytes(t, 8<<20)
	writeTree(t, src, map[string]string{"blob.bin": content})

	plain := g.createToken("plain", "write", time.Hour)
	killPushMidway(t, g, plain, src+"/blob.bin", "blob.bin")
	if entries, _ := os.ReadDir(g.root("plain")); len(entries) != 0 {
		t.Fatalf("an interrupted push left %v in the root", entries)
	}

	partial := g.createToken("partial", "write", time.Hour)
	killPushMidway(t, g, partial, src+"/blob.bin", "blob.bin", "--partial")
	st, err := os.Stat(g.root("partial/blob.bin"))
	if err != nil || st.Size() == 0 || st.Size() >= int64(len(content)) {
		t.Fatalf("--partial kept %v (%v); want a part of the file", st, err)
	}
	res := g.rsync(partial, "-a", "--partial", "--stats", src+"/blob.bin", g.remote("blob.bin"))
	if res.code != 0 {
		t.Fatalf("rerun: exit %d: %s", res.code, res.stderr)
	}
	m := regexp.MustCompile(`Literal data: ([\d,]+) bytes`).FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("no stats:\n%s", res.stdout)
	}
	literal, _ := strconv.Atoi(strings.ReplaceAll(m[1], ",", ""))
	if literal >= len(content) {
		t.Fatalf("the rerun sent %d literal bytes of %d: it did not resume", literal, len(content))
	}
	if got, _ := os.ReadFile(g.root("partial/blob.bin")); string(got) != content {
		t.Fatal("the resumed file differs from the source")
	}
}
