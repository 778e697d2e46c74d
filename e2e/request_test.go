package e2e

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/internal/redistest"
)

func mintUnstoredToken(t *testing.T) string {
	tok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

// withOtherSecret keeps a real token's ID but replaces its secret (with a
// valid checksum), as an attacker who learnt only the ID would.
func withOtherSecret(t *testing.T, real string) string {
	parsed, err := auth.ParseToken(real)
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return auth.Token{ID: parsed.ID, Secret: other.Secret}.String()
}

// Anything that is not an rsync server exec is refused with one line and a
// non-zero status, and logged.
func TestOnlyRsyncIsServed(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	tok := g.createToken("only", "read,write,delete", time.Hour)

	cases := []struct {
		name   string
		args   []string
		words  string
		reason string
	}{
		{"cat /etc/passwd", []string{"tester@127.0.0.1", "cat /etc/passwd"},
			"tokengate:", "command_forbidden"},
		{"shell", []string{"-T", "tester@127.0.0.1"}, "no shell is offered", "request_forbidden"},
		{"pty and shell", []string{"-tt", "tester@127.0.0.1"}, "no shell is offered", "request_forbidden"},
		{"sftp subsystem", []string{"-s", "tester@127.0.0.1", "sftp"}, "is not offered", "request_forbidden"},
		{"rsync via sudo", []string{"tester@127.0.0.1", "sudo rsync --server -logDtpre.iLsfxCIvu . x/"},
			"tokengate:", "command_forbidden"},
		{"mkdir and rsync", []string{"tester@127.0.0.1",
			"mkdir -p d && rsync --server -logDtpre.iLsfxCIvu . d/"}, "--mkpath", "command_forbidden"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := g.ssh(tok, c.args...)
			expectRefused(t, res, c.words)
			g.waitEvent("command.denied", map[string]string{"event.reason": c.reason})
		})
	}

	t.Run("sftp client", func(t *testing.T) {
		args := append([]string{"-e", "sftp", "-b", "-"}, strings.Replace(
			strings.Join(g.sshOpts(), " "), "-p ", "-P ", 1))
		args = append(strings.Fields(strings.Join(args, " ")), "tester@127.0.0.1")
		cmd := exec.Command("sshpass", args...)
		cmd.Env = append(os.Environ(), "SSHPASS="+tok)
		cmd.Stdin = strings.NewReader("ls /\n")
		res := runCmd(t, cmd)
		if res.code == 0 {
			t.Fatalf("sftp succeeded: %s", res.stdout)
		}
	})

	t.Run("port forwarding", func(t *testing.T) {
		port := freePort(t)
		res := g.ssh(tok, "-N", "-o", "ExitOnForwardFailure=yes",
			"-R", "127.0.0.1:"+itoa(port)+":127.0.0.1:9", "tester@127.0.0.1")
		if res.code == 0 {
			t.Fatal("remote forwarding was accepted")
		}
		g.waitEvent("command.denied", map[string]string{"ssh.request": "tcpip-forward"})
	})

	t.Run("client environment never reaches rsync", func(t *testing.T) {
		// If LD_PRELOAD reached the jailed rsync it would fail to load.
		src := t.TempDir()
		writeTree(t, src, map[string]string{"e.txt": "env\n"})
		sshCmd := "sshpass -e ssh " + strings.Join(g.sshOpts(), " ") +
			" -o SendEnv=LD_PRELOAD -o SetEnv=LD_PRELOAD=/nonexistent.so"
		cmd := exec.Command("rsync", "-a", "-e", sshCmd, src+"/", g.remote("env/"))
		cmd.Env = append(os.Environ(), "SSHPASS="+tok, "LD_PRELOAD=")
		res := runCmd(t, cmd)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		sameTree(t, readTree(t, g.root("only/env")), map[string]string{"e.txt": "env\n"})
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// With Redis down nobody gets in and the reason says so; when Redis is back
// the gateway works again without a restart.
func TestRedisOutage(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	tok := g.createToken("o", "read,write", time.Hour)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"x.txt": "x\n"})

	// The store lives only in memory here; remember the token's keys to
	// restore them after the restart.
	r.Stop()
	res := g.rsync(tok, "-a", src+"/", g.remote("x/"))
	expectRefused(t, res, "authentication backend is unavailable")
	g.waitEvent("auth.denied", map[string]string{"event.reason": "backend_unavailable"})

	r.Restart()
	tok = g.createToken("o", "read,write", time.Hour)
	res = g.rsync(tok, "-a", src+"/", g.remote("x/"))
	if res.code != 0 {
		t.Fatalf("after Redis returned: exit %d: %s", res.code, res.stderr)
	}
	sameTree(t, readTree(t, g.root("o/x")), map[string]string{"x.txt": "x\n"})
}

// No token string appears in the gateway's log or in any file it wrote,
// after logins that succeeded and failed.
func TestNoSecretLeaks(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	good := g.createToken("s", "read,write", time.Hour)
	bad := withOtherSecret(t, good)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"s.txt": "s\n"})
	if res := g.rsync(good, "-a", src+"/", g.remote("s/")); res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	expectRefused(t, g.rsync(bad, "-a", src+"/", g.remote("s/")), "unknown token")
	g.waitEvent("auth.denied", map[string]string{"event.reason": "secret_mismatch"})
	// A token pasted where it does not belong: as the user name, in a command.
	expectRefused(t, g.ssh(good, good+"@127.0.0.1", "echo "+good), "tokengate:")
	g.waitEvent("command.denied", map[string]string{"event.reason": "command_forbidden"})

	goodTok, _ := auth.ParseToken(good)
	badTok, _ := auth.ParseToken(bad)
	secrets := []string{good, bad, goodTok.Secret, badTok.Secret}
	for _, line := range g.logLines() {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Fatalf("log line carries a token or secret: %s", line)
			}
		}
	}
	err := filepath.Walk(g.stateDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%s contains a token or secret", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Redis holds the hash, never the secret.
	dump, _ := r.CLI("HGETALL", "tokengate:token:"+goodTok.ID)
	if strings.Contains(dump, goodTok.Secret) || !strings.Contains(dump, auth.HashSecret(goodTok.Secret)) {
		t.Fatalf("Redis record is not hash-only: %s", dump)
	}
}

// A connection that does not finish logging in within --login-grace is
// closed, whether it sends nothing or stalls in the middle of the handshake.
func TestLoginGrace(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r, withArgs("--login-grace", "1s"))
	for _, first := range []string{"", "SSH-2.0-stalled\r\n"} {
		conn, err := net.Dial("tcp", "127.0.0.1:"+itoa(g.port))
		if err != nil {
			t.Fatal(err)
		}
		if first != "" {
			if _, err := conn.Write([]byte(first)); err != nil {
				t.Fatal(err)
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		_, err = io.Copy(io.Discard, conn)
		took := time.Since(start)
		conn.Close()
		if err != nil || took > 5*time.Second {
			t.Fatalf("after %q the connection stayed open %v (err %v)", first, took, err)
		}
	}
}
