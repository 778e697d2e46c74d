package e2e

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/redistest"
)

func randomBytes(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A tree pushed and pulled back is byte-identical, and a second push sends
// only what changed.
func TestPushPullRoundTrip(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	token := g.createToken("projects/acme", "read,write", time.Hour)

	src := t.TempDir()
	files := map[string]string{
		"index.html":          "<h1>acme</h1>\n",
		"css/site.css":        "body{}\n",
		"img/logo.bin":        randomBytes(t, 300<<10),
		"deep/a/b/c/d.txt":    "deep\n",
		"with space/file 1.x": "spaces\n",
	}
	writeTree(t, src, files)

	res := g.rsync(token, "-az", src+"/", g.remote("site/"))
	if res.code != 0 {
		t.Fatalf("push: exit %d: %s", res.code, res.stderr)
	}
	sameTree(t, readTree(t, filepath.Join(g.root("projects/acme"), "site")), files)
	end := g.waitEvent("session.end", map[string]string{"rsync.direction": "push", "rsync.exit_code": "0"})
	if in, _ := end["bytes.in"].(float64); in < 300<<10 {
		t.Errorf("session.end bytes.in = %v, want at least the 300 KiB pushed", end["bytes.in"])
	}

	copyDir := t.TempDir()
	res = g.rsync(token, "-az", g.remote("site/"), copyDir+"/")
	if res.code != 0 {
		t.Fatalf("pull: exit %d: %s", res.code, res.stderr)
	}
	sameTree(t, readTree(t, copyDir), files)
	g.waitEvent("session.end", map[string]string{"rsync.direction": "pull", "rsync.exit_code": "0"})

	// Change one file; the incremental push transfers exactly that one.
	writeTree(t, src, map[string]string{"css/site.css": "body{color:red}\n"})
	res = g.rsync(token, "-az", "--stats", src+"/", g.remote("site/"))
	if res.code != 0 {
		t.Fatalf("second push: exit %d: %s", res.code, res.stderr)
	}
	m := regexp.MustCompile(`Number of regular files transferred: (\d+)`).FindStringSubmatch(res.stdout)
	if m == nil || m[1] != "1" {
		t.Fatalf("second push transferred %v files, want 1; stats:\n%s", m, res.stdout)
	}
	files["css/site.css"] = "body{color:red}\n"
	sameTree(t, readTree(t, filepath.Join(g.root("projects/acme"), "site")), files)
}

// Both SSH auth methods accept the token, and so do SSH_ASKPASS and sshpass.
func TestAuthMethods(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	token := g.createToken("m", "read,write", time.Hour)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"f.txt": "methods\n"})

	for _, method := range []string{"password", "keyboard-interactive"} {
		t.Run("sshpass-"+method, func(t *testing.T) {
			sshCmd := "sshpass -e ssh " + strings.Join(g.sshOpts(), " ") +
				" -o PreferredAuthentications=" + method
			cmd := exec.Command("rsync", "-a", "-e", sshCmd, src+"/", g.remote(method+"/"))
			cmd.Env = append(os.Environ(), "SSHPASS="+token)
			res := runCmd(t, cmd)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			sameTree(t, readTree(t, g.root("m/"+method)), map[string]string{"f.txt": "methods\n"})
			g.waitEvent("auth.granted", map[string]string{"auth.method": method})
		})
	}

	t.Run("askpass", func(t *testing.T) {
		// The askpass program reads the token from its environment, never argv.
		askpass := filepath.Join(t.TempDir(), "askpass")
		if err := os.WriteFile(askpass, []byte("#!/bin/sh\nprintf '%s\\n' \"$E2E_TOKEN\"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		sshCmd := "ssh " + strings.Join(g.sshOpts(), " ") +
			" -o PreferredAuthentications=keyboard-interactive,password"
		cmd := exec.Command("setsid", "-w", "rsync", "-a", "-e", sshCmd, src+"/", g.remote("askpass/"))
		cmd.Env = append(os.Environ(), "E2E_TOKEN="+token, "SSH_ASKPASS="+askpass,
			"SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
		res := runCmd(t, cmd)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		sameTree(t, readTree(t, g.root("m/askpass")), map[string]string{"f.txt": "methods\n"})
	})
}
