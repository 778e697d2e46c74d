package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/internal/redistest"
)

// syncCommand is `gateway sync FLAGS -- -a -e SSH RSYNC_ARGS` against g, in
// an environment without TOKENGATE_* variables that could stand in for flags.
func (g *gateway) syncCommand(flags []string, rsyncArgs ...string) *exec.Cmd {
	args := append([]string{"sync"}, flags...)
	args = append(args, "--", "-a", "-e", "ssh "+strings.Join(g.sshOpts(), " "))
	cmd := exec.Command(gatewayBin, append(args, rsyncArgs...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOKENGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// tokenSequence is a token command that hands out its tokens in turn, one
// per run, then repeats the last; it counts its runs.
type tokenSequence struct{ dir string }

func newTokenSequence(t *testing.T, tokens ...string) tokenSequence {
	t.Helper()
	s := tokenSequence{dir: t.TempDir()}
	for i, tok := range tokens {
		name := filepath.Join(s.dir, "token."+strconv.Itoa(i+1))
		if err := os.WriteFile(name, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(`d=%s
n=$(cat "$d/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$d/count"
i=$n
[ "$i" -gt %d ] && i=%d
cat "$d/token.$i"
`, s.dir, len(tokens), len(tokens))
	if err := os.WriteFile(filepath.Join(s.dir, "next"), []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s tokenSequence) command() string { return "sh " + filepath.Join(s.dir, "next") }

func (s tokenSequence) runs(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "count"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// revokeByDEL revokes a token the way an admin with only redis-cli does.
func revokeByDEL(t *testing.T, r *redistest.Server, token string) {
	t.Helper()
	out, err := r.CLI("DEL", auth.TokenKey(tokenID(t, token)))
	if err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("DEL: %v %s", err, out)
	}
}

// denials counts the gateway's auth.denied events for a token.
func (g *gateway) denials(id string) int {
	n := 0
	for _, e := range g.events("auth.denied") {
		if e.str("token.id") == id {
			n++
		}
	}
	return n
}

func alertLinesOf(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "ALERT") {
			out = append(out, line)
		}
	}
	return out
}

func noTokenIn(t *testing.T, res result, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		if strings.Contains(res.stdout+res.stderr, tok) {
			t.Fatalf("sync printed a token:\n%s%s", res.stdout, res.stderr)
		}
	}
}

// (a) The token command first hands out a token revoked with redis-cli DEL;
// sync sees the refusal, runs the command again and finishes the job.
func TestSyncRetriesWithAFreshToken(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("s", map[string]string{".keep": ""})
	revoked := g.createToken("s", "read,write", time.Hour)
	revokeByDEL(t, r, revoked)
	good := g.createToken("s", "read,write", time.Hour)
	tokens := newTokenSequence(t, revoked, good)

	src := t.TempDir()
	files := map[string]string{
		"index.html":   "<h1>sync</h1>\n",
		"img/logo.bin": randomBytes(t, 300<<10),
		"deep/a/b.txt": "deep\n",
	}
	writeTree(t, src, files)

	res := runCmd(t, g.syncCommand([]string{"--token-cmd", tokens.command(),
		"--backoff", "100ms"}, src+"/", g.remote("site/")))
	if res.code != 0 {
		t.Fatalf("sync: exit %d:\n%s", res.code, res.stderr)
	}
	sameTree(t, readTree(t, filepath.Join(g.root("s"), "site")), files)
	if n := tokens.runs(t); n != 2 {
		t.Errorf("the token command ran %d times, want 2", n)
	}
	id := tokenID(t, revoked)
	for _, want := range []string{"tokengate: token " + id + " was revoked", "trying again"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.stderr)
		}
	}
	if lines := alertLinesOf(res.stderr); len(lines) != 0 {
		t.Errorf("a job that recovered raised an alert: %q", lines)
	}
	// ssh asks again after a refusal; askpass must not resend the token, or
	// each refused connection would count six failures toward a ban.
	if n := g.denials(id); n != 1 {
		t.Errorf("the gateway refused the revoked token %d times, want once", n)
	}
	noTokenIn(t, res, revoked, good)
}

// A revocation cuts a live pull halfway; sync retries with a fresh token,
// and thanks to the partial directory the retry sends only the rest.
func TestSyncResumesAfterARevocationCut(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	const size = 4 << 20
	big := randomBytes(t, size)
	g.seed("s", map[string]string{"big.bin": big})
	first := g.createToken("s", "read", time.Hour)
	second := g.createToken("s", "read", time.Hour)
	tokens := newTokenSequence(t, first, second)

	dst := t.TempDir()
	done := make(chan result, 1)
	cmd := g.syncCommand([]string{"--token-cmd", tokens.command(), "--backoff", "100ms"},
		"--bwlimit=1024", g.remote("big.bin"), dst+"/")
	go func() { done <- runCmd(t, cmd) }()
	g.waitEvent("session.start", map[string]string{"token.id": tokenID(t, first)})
	time.Sleep(time.Second) // about a quarter of the file
	revokeByDEL(t, r, first)

	res := <-done
	if res.code != 0 {
		t.Fatalf("sync: exit %d:\n%s", res.code, res.stderr)
	}
	sameTree(t, readTree(t, dst), map[string]string{"big.bin": big})
	if !strings.Contains(res.stderr, "tokengate: token "+tokenID(t, first)+" was revoked") {
		t.Errorf("the cut is not on stderr:\n%s", res.stderr)
	}
	end := g.waitEvent("session.end", map[string]string{"token.id": tokenID(t, second)})
	if out, _ := end["bytes.out"].(float64); out <= 0 || out > size*3/4 {
		t.Errorf("the retry sent %v bytes of %d; want only what the cut left",
			end["bytes.out"], size)
	}
}

// (b) A token with a 3s life expires between the two files of one job. The
// job is what a cron script does: one sync per file, with a token command
// whose cache is not yet refreshed when the second sync starts. The running
// transfer outlives the expiry; the second sync gets the expired token,
// is refused, fetches a fresh one and finishes.
func TestSyncTokenExpiresBetweenTwoFiles(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("s", map[string]string{".keep": ""})
	const ttl = 3 * time.Second
	short := g.createToken("s", "read,write", ttl)
	expires := time.Now().Add(ttl)
	good := g.createToken("s", "read,write", time.Hour)
	tokens := newTokenSequence(t, short, short, good)

	src := t.TempDir()
	files := map[string]string{"1-big.bin": randomBytes(t, 3<<20), "2-small.txt": "second\n"}
	writeTree(t, src, files)

	// File 1, throttled to last about 6s: its session starts before the
	// expiry and runs past it.
	res := runCmd(t, g.syncCommand([]string{"--token-cmd", tokens.command()},
		"--bwlimit=512", filepath.Join(src, "1-big.bin"), g.remote("job/")))
	if res.code != 0 {
		t.Fatalf("file 1: exit %d:\n%s", res.code, res.stderr)
	}
	if time.Now().Before(expires) {
		t.Fatalf("file 1 finished before the token expired; the test proves nothing")
	}

	// File 2: the command still hands out the expired token first.
	res = runCmd(t, g.syncCommand([]string{"--token-cmd", tokens.command(),
		"--backoff", "100ms"}, filepath.Join(src, "2-small.txt"), g.remote("job/")))
	if res.code != 0 {
		t.Fatalf("file 2: exit %d:\n%s", res.code, res.stderr)
	}
	want := "tokengate: token " + tokenID(t, short) + " expired at"
	if !strings.Contains(res.stderr, want) {
		t.Errorf("file 2's stderr lacks %q:\n%s", want, res.stderr)
	}
	sameTree(t, readTree(t, filepath.Join(g.root("s"), "job")), files)
	if n := tokens.runs(t); n != 3 {
		t.Errorf("the token command ran %d times, want 3", n)
	}
	noTokenIn(t, res, short, good)
}

// rsyncStatus is the code in rsync's last "rsync error: ... (code N)" line.
func rsyncStatus(stderr string) int {
	m := regexp.MustCompile(`\(code (\d+)\)`).FindAllStringSubmatch(stderr, -1)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// (c) When no fresh token can help, sync prints exactly one ALERT line and
// exits with rsync's status; other failures are rsync's, without an alert.
func TestSyncGivesUp(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("s", map[string]string{"f.txt": "f\n"})

	t.Run("the command keeps returning a revoked token", func(t *testing.T) {
		revoked := g.createToken("s", "read", time.Hour)
		revokeByDEL(t, r, revoked)
		tokens := newTokenSequence(t, revoked)
		res := runCmd(t, g.syncCommand([]string{"--token-cmd", tokens.command(),
			"--retries", "2", "--backoff", "50ms"}, g.remote("f.txt"), t.TempDir()+"/"))

		if res.code == 0 || res.code != rsyncStatus(res.stderr) {
			t.Fatalf("exit %d, want rsync's status %d:\n%s", res.code,
				rsyncStatus(res.stderr), res.stderr)
		}
		alerts := alertLinesOf(res.stderr)
		if len(alerts) != 1 {
			t.Fatalf("%d ALERT lines, want 1:\n%s", len(alerts), res.stderr)
		}
		id := tokenID(t, revoked)
		for _, want := range []string{"token refused 3 times", id + " was revoked",
			`the token command "sh /`, "keeps returning that token", "rerun"} {
			if !strings.Contains(alerts[0], want) {
				t.Errorf("alert lacks %q: %s", want, alerts[0])
			}
		}
		if !strings.HasSuffix(strings.TrimSpace(res.stderr), alerts[0]) {
			t.Errorf("the alert is not the last line:\n%s", res.stderr)
		}
		// A token already refused is not sent again.
		if n := g.denials(id); n != 1 {
			t.Errorf("the gateway refused the token %d times, want once", n)
		}
		if n := tokens.runs(t); n != 3 {
			t.Errorf("the token command ran %d times, want 3", n)
		}
		noTokenIn(t, res, revoked)
	})

	t.Run("the command fails", func(t *testing.T) {
		res := runCmd(t, g.syncCommand([]string{"--token-cmd", "echo vault is sealed >&2; exit 3",
			"--retries", "1", "--backoff", "50ms"}, g.remote("f.txt"), t.TempDir()+"/"))
		alerts := alertLinesOf(res.stderr)
		if res.code != 1 || len(alerts) != 1 ||
			!strings.Contains(alerts[0], "no usable token after 2 tries") ||
			!strings.Contains(alerts[0], "exit status 3") {
			t.Fatalf("exit %d, alerts %q:\n%s", res.code, alerts, res.stderr)
		}
		if !strings.Contains(res.stderr, "vault is sealed") {
			t.Errorf("the command's stderr was not passed through:\n%s", res.stderr)
		}
	})

	t.Run("an unknown host key is not a token problem", func(t *testing.T) {
		tok := g.createToken("s", "read", time.Hour)
		known := filepath.Join(t.TempDir(), "known_hosts")
		if err := os.WriteFile(known, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		// Ask the real question: replace the harness's "no host key checks".
		cmd := g.syncCommand([]string{"--token-cmd", "printf '%s\\n' \"$E2E_TOKEN\""},
			g.remote("f.txt"), t.TempDir()+"/")
		for i, a := range cmd.Args {
			a = strings.Replace(a, "StrictHostKeyChecking=no", "StrictHostKeyChecking=ask", 1)
			cmd.Args[i] = strings.Replace(a, "UserKnownHostsFile=/dev/null",
				"UserKnownHostsFile="+known, 1)
		}
		cmd.Env = append(cmd.Env, "E2E_TOKEN="+tok)
		res := runCmd(t, cmd)
		if res.code == 0 || res.code != rsyncStatus(res.stderr) ||
			len(alertLinesOf(res.stderr)) != 0 || strings.Contains(res.stderr, "trying again") {
			t.Fatalf("exit %d, want rsync's status without retry or alert:\n%s",
				res.code, res.stderr)
		}
		for _, want := range []string{"askpass: not answering ssh's question",
			"continue connecting", "Host key verification failed"} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, res.stderr)
			}
		}
		if n := len(g.events("auth.granted")) + g.denials(tokenID(t, tok)); n != 0 {
			t.Errorf("the token reached the gateway (%d events) without a trusted host key", n)
		}
	})
}

// argvWatch samples every process's argv while a sync runs, and the
// environment of the ssh processes that talk to the gateway.
type argvWatch struct {
	port     string
	argvs    map[string]bool // every argv seen, NUL-joined
	sshEnv   []string        // TOKENGATE_TOKEN values seen in those ssh processes
	sawRsync bool
	sawSSH   bool
}

func (w *argvWatch) sample() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		w.argvs[string(b)] = true
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) == "rsync" && strings.Contains(string(b), "127.0.0.1:") {
			w.sawRsync = true
		}
		if filepath.Base(args[0]) == "ssh" && strings.Contains(string(b), "\x00"+w.port+"\x00") {
			w.sawSSH = true
			env, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "environ"))
			for _, kv := range bytes.Split(env, []byte{0}) {
				if v, ok := bytes.CutPrefix(kv, []byte("TOKENGATE_TOKEN=")); ok {
					w.sshEnv = append(w.sshEnv, string(v))
				}
			}
		}
	}
}

// watchArgv runs cmd while sampling /proc every 20ms.
func (g *gateway) watchArgv(t *testing.T, cmd *exec.Cmd) (result, *argvWatch) {
	t.Helper()
	w := &argvWatch{port: strconv.Itoa(g.port), argvs: map[string]bool{}}
	done := make(chan result, 1)
	go func() { done <- runCmd(t, cmd) }()
	for {
		w.sample()
		select {
		case res := <-done:
			return res, w
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *argvWatch) check(t *testing.T, tokens ...string) {
	t.Helper()
	if !w.sawRsync || !w.sawSSH {
		t.Fatalf("never saw rsync (%v) and ssh (%v) running; the check proves nothing",
			w.sawRsync, w.sawSSH)
	}
	for argv := range w.argvs {
		for _, tok := range tokens {
			// The secret part alone must not appear either.
			if strings.Contains(argv, tok) || strings.Contains(argv, tok[16:48]) {
				t.Fatalf("a token is in a process's argv: %q",
					strings.ReplaceAll(argv, "\x00", " "))
			}
		}
	}
}

// (d) No token, the issuer token included, is ever in any process's argv:
// it reaches ssh through the environment only.
func TestSyncKeepsTokensOutOfArgv(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("s", map[string]string{"big.bin": randomBytes(t, 2<<20)})

	t.Run("token command", func(t *testing.T) {
		tok := g.createToken("s", "read", time.Hour)
		tokens := newTokenSequence(t, tok)
		dst := t.TempDir()
		res, w := g.watchArgv(t, g.syncCommand([]string{"--token-cmd", tokens.command()},
			"--bwlimit=1024", g.remote("big.bin"), dst+"/"))
		if res.code != 0 {
			t.Fatalf("sync: exit %d:\n%s", res.code, res.stderr)
		}
		w.check(t, tok)
		if len(w.sshEnv) == 0 || w.sshEnv[0] != tok {
			t.Errorf("ssh's environment did not carry the token")
		}
		noTokenIn(t, res, tok)
	})

	t.Run("issuer token", func(t *testing.T) {
		issuer := g.createToken("s", "read,issue", time.Hour)
		tokens := newTokenSequence(t, issuer)
		dst := t.TempDir()
		res, w := g.watchArgv(t, g.syncCommand([]string{"--issuer-token-cmd", tokens.command(),
			"--scope", "read", "--ttl", "1m"}, "--bwlimit=1024", g.remote("big.bin"), dst+"/"))
		if res.code != 0 {
			t.Fatalf("sync: exit %d:\n%s", res.code, res.stderr)
		}
		// The minted token is the one rsync's ssh carried in its environment.
		var minted []string
		for _, tok := range w.sshEnv {
			if tok != issuer {
				minted = append(minted, tok)
			}
		}
		if len(minted) == 0 {
			t.Fatal("never saw the minted token in rsync's ssh environment")
		}
		w.check(t, append(minted, issuer)...)
		noTokenIn(t, res, append(minted, issuer)...)
	})
}

// With --issuer-token-cmd, sync mints a short-lived token over the same SSH
// port and rsync uses that, never the issuer token; an issuer token that
// was revoked ends in one alert.
func TestSyncMintsFromAnIssuerToken(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("s", map[string]string{".keep": ""})
	issuer := g.createToken("s", "read,write,issue", time.Hour)
	issuerID := tokenID(t, issuer)
	tokens := newTokenSequence(t, issuer)

	// The gateway's side of minting, as sync calls it.
	probe := g.ssh(issuer, "tester@127.0.0.1", "token", "issue", "--ttl", "1m",
		"--scope", "read", "--json")
	if probe.code != 0 {
		t.Fatalf("ssh ... token issue: exit %d: %s", probe.code, probe.stderr)
	}

	src := t.TempDir()
	files := map[string]string{"a.txt": "minted\n", "b/c.bin": randomBytes(t, 64<<10)}
	writeTree(t, src, files)
	res := runCmd(t, g.syncCommand([]string{"--issuer-token-cmd", tokens.command(),
		"--scope", "write", "--ttl", "2m"}, src+"/", g.remote("pushed/")))
	if res.code != 0 {
		t.Fatalf("sync: exit %d:\n%s", res.code, res.stderr)
	}
	sameTree(t, readTree(t, filepath.Join(g.root("s"), "pushed")), files)

	issued := g.waitEvent("token.issued", map[string]string{"token.parent.id": issuerID,
		"token.scopes": "write"})
	childID := issued.str("token.id")
	g.waitEvent("session.start", map[string]string{"token.id": childID})
	for _, e := range g.events("session.start") {
		if e.str("token.id") == issuerID {
			t.Errorf("rsync ran on the issuer token itself")
		}
	}
	noTokenIn(t, res, issuer)

	// Revoked, the issuer token cannot mint; the command keeps returning it.
	revokeByDEL(t, r, issuer)
	res = runCmd(t, g.syncCommand([]string{"--issuer-token-cmd", tokens.command(),
		"--retries", "1", "--backoff", "50ms"}, src+"/", g.remote("pushed/")))
	alerts := alertLinesOf(res.stderr)
	if res.code == 0 || len(alerts) != 1 ||
		!strings.Contains(alerts[0], "issuer token refused 2 times") ||
		!strings.Contains(alerts[0], issuerID+" was revoked") {
		t.Fatalf("exit %d, alerts %q:\n%s", res.code, alerts, res.stderr)
	}
	if n := g.denials(issuerID); n != 1 {
		t.Errorf("the gateway refused the issuer token %d times, want once", n)
	}
}
