package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/redistest"
)

// expectRefused checks a refused run: non-zero exit, the client saw want.
func expectRefused(t *testing.T, res result, want string) {
	t.Helper()
	if res.code == 0 {
		t.Fatalf("exit 0, want a refusal; stderr: %s", res.stderr)
	}
	if !strings.Contains(res.stderr, want) {
		t.Fatalf("client stderr lacks %q:\n%s", want, res.stderr)
	}
}

// Scopes decide the direction and whether anything may be removed.
func TestScopes(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a.txt": "a\n", "b.txt": "b\n"})
	g.seed("shared/data", map[string]string{"a.txt": "a\n", "old.txt": "old\n"})

	t.Run("read-only cannot push", func(t *testing.T) {
		tok := g.createToken("shared", "read", time.Hour)
		res := g.rsync(tok, "-a", src+"/", g.remote("data/"))
		expectRefused(t, res, "lacks write scope")
		e := g.waitEvent("command.denied", map[string]string{"event.reason": "scope_missing"})
		if e.str("token.id") == "" || e.str("session.id") == "" || e.str("source.ip") != "127.0.0.1" {
			t.Errorf("denial event lacks token, session or source: %v", e)
		}
		if _, err := os.Stat(filepath.Join(g.root("shared/data"), "b.txt")); err == nil {
			t.Fatal("b.txt arrived through a read-only token")
		}
	})
	t.Run("write-only cannot pull", func(t *testing.T) {
		tok := g.createToken("shared", "write", time.Hour)
		res := g.rsync(tok, "-a", g.remote("data/"), t.TempDir()+"/")
		expectRefused(t, res, "lacks read scope")
	})
	t.Run("delete needs delete", func(t *testing.T) {
		tok := g.createToken("shared", "read,write", time.Hour)
		res := g.rsync(tok, "-a", "--delete", src+"/", g.remote("data/"))
		expectRefused(t, res, "lacks delete scope")
		if _, err := os.Stat(filepath.Join(g.root("shared/data"), "old.txt")); err != nil {
			t.Fatal("old.txt was removed without delete scope")
		}
	})
	t.Run("delete with delete", func(t *testing.T) {
		tok := g.createToken("shared", "read,write,delete", time.Hour)
		res := g.rsync(tok, "-a", "--delete", src+"/", g.remote("data/"))
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		sameTree(t, readTree(t, g.root("shared/data")), map[string]string{"a.txt": "a\n", "b.txt": "b\n"})
	})
}

// Expired, revoked, mistyped and unknown tokens are refused with the right
// reason, in words the client sees.
func TestRefusedTokens(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	dst := t.TempDir()
	g.seed("t", map[string]string{"f": "f\n"})

	cases := []struct {
		name   string
		token  func() string
		reason string
		words  string
	}{
		{"expired", func() string {
			tok := g.createToken("t", "read", 1*time.Second)
			time.Sleep(1500 * time.Millisecond)
			return tok
		}, "token_expired", "expired"},
		{"revoked by redis-cli DEL", func() string {
			tok := g.createToken("t", "read", time.Hour)
			id := strings.Split(tok, "_")[1]
			if out, err := r.CLI("DEL", "tokengate:token:"+id); err != nil || strings.TrimSpace(out) != "1" {
				t.Fatalf("DEL: %v %s", err, out)
			}
			return tok
		}, "token_revoked", "was revoked"},
		{"mistyped", func() string {
			tok := []byte(g.createToken("t", "read", time.Hour))
			tok[10] ^= 1
			return string(tok)
		}, "token_malformed", "not a valid tokengate token"},
		{"unknown", func() string {
			// A well-formed token that was never stored.
			return mintUnstoredToken(t)
		}, "token_unknown", "unknown token"},
		{"wrong secret", func() string {
			return withOtherSecret(t, g.createToken("t", "read", time.Hour))
		}, "secret_mismatch", "unknown token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := g.rsync(c.token(), "-a", g.remote("f"), dst+"/")
			expectRefused(t, res, c.words)
			g.waitEvent("auth.denied", map[string]string{"event.reason": c.reason})
		})
	}
}

// A token for one root reaches nothing outside it: not through .., not
// through absolute paths, not through symlinks.
func TestConfinement(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	g.seed("tenant-b", map[string]string{"secret.txt": "tenant b only\n"})
	g.seed("tenant-a", map[string]string{"mine.txt": "a\n"})
	tokA := g.createToken("tenant-a", "read,write", time.Hour)

	for _, path := range []string{"../tenant-b/secret.txt", "/../tenant-b/secret.txt", "a/../../tenant-b/"} {
		t.Run("pull "+path, func(t *testing.T) {
			dst := t.TempDir()
			res := g.rsync(tokA, "-a", g.remote(path), dst+"/")
			expectRefused(t, res, "leaves the token's root")
			if len(readTree(t, dst)) != 0 {
				t.Fatal("files arrived from outside the root")
			}
		})
	}
	t.Run("absolute path means inside the root", func(t *testing.T) {
		dst := t.TempDir()
		res := g.rsync(tokA, "-a", g.remote("/mine.txt"), dst+"/")
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		sameTree(t, readTree(t, dst), map[string]string{"mine.txt": "a\n"})
		dst = t.TempDir()
		res = g.rsync(tokA, "-a", g.remote("/tenant-b/secret.txt"), dst+"/")
		if res.code == 0 || len(readTree(t, dst)) != 0 {
			t.Fatalf("an absolute path reached another tenant: exit %d", res.code)
		}
	})
	t.Run("push to another root", func(t *testing.T) {
		src := t.TempDir()
		writeTree(t, src, map[string]string{"evil.txt": "x\n"})
		res := g.rsync(tokA, "-a", src+"/", g.remote("../tenant-b/"))
		expectRefused(t, res, "leaves the token's root")
		if _, err := os.Stat(g.root("tenant-b/evil.txt")); err == nil {
			t.Fatal("a push landed in another tenant's root")
		}
	})
	t.Run("symlinks", func(t *testing.T) {
		// Push a symlink to / and one to the other tenant, then pull
		// through them following links: nothing from outside arrives.
		src := t.TempDir()
		if err := os.Symlink("/", filepath.Join(src, "to-root")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../tenant-b", filepath.Join(src, "to-b")); err != nil {
			t.Fatal(err)
		}
		res := g.rsync(tokA, "-a", src+"/", g.remote("links/"))
		if res.code != 0 {
			t.Fatalf("push of symlinks: exit %d: %s", res.code, res.stderr)
		}
		// A link an admin left on the host is no way out either.
		if err := os.Symlink("../tenant-b", g.root("tenant-a/host-link")); err != nil {
			t.Fatal(err)
		}
		dst := t.TempDir()
		res = g.rsync(tokA, "-rL", g.remote("/"), dst+"/")
		got := readTree(t, dst)
		passwd, _ := os.ReadFile("/etc/passwd")
		for name, content := range got {
			if strings.Contains(content, "tenant b only") || (len(passwd) > 0 && content == string(passwd)) {
				t.Fatalf("%s leaked a file from outside the root", name)
			}
			if strings.HasPrefix(name, "links/to-root/") || strings.HasPrefix(name, "host-link/") {
				t.Fatalf("followed a link out of the root: %s", name)
			}
		}
		if got["mine.txt"] != "a\n" {
			t.Fatalf("the root's own file did not arrive (exit %d): %v %s", res.code, keys(got), res.stderr)
		}
	})
}
