package client

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/auth"
)

func newToken(t testing.TB) string {
	t.Helper()
	tok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

// writeTokenFile writes content to a fresh file of the given mode.
func writeTokenFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadTokenFile(t *testing.T) {
	tok := newToken(t)

	t.Run("0600 accepted", func(t *testing.T) {
		got, err := readTokenFile(writeTokenFile(t, tok+"\n", 0o600))
		if err != nil || got != tok {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("0400 accepted, first line trimmed", func(t *testing.T) {
		got, err := readTokenFile(writeTokenFile(t, "  "+tok+" \nsecond line\n", 0o400))
		if err != nil || got != tok {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		t.Run("mode "+mode.String()+" refused", func(t *testing.T) {
			p := writeTokenFile(t, tok, mode)
			_, err := readTokenFile(p)
			if err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
				t.Fatalf("err = %v, want a refusal that says chmod 600", err)
			}
			if strings.Contains(err.Error(), tok) {
				t.Fatal("the refusal quotes the token")
			}
		})
	}
	t.Run("another owner refused", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give the file away")
		}
		p := writeTokenFile(t, tok, 0o600)
		if err := os.Chown(p, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		_, err := readTokenFile(p)
		if err == nil || !strings.Contains(err.Error(), "belongs to uid 4242") {
			t.Fatalf("err = %v, want a refusal naming the owner", err)
		}
	})
	t.Run("a directory refused", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := readTokenFile(dir); err == nil ||
			!strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a FIFO refused without hanging", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readTokenFile(p); err == nil ||
			!strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a symlink is judged by its target", func(t *testing.T) {
		target := writeTokenFile(t, tok, 0o644)
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := readTokenFile(link); err == nil {
			t.Fatal("a link to a file of mode 0644 was accepted")
		}
	})
	t.Run("empty refused", func(t *testing.T) {
		if _, err := readTokenFile(writeTokenFile(t, "\n", 0o600)); err == nil ||
			!strings.Contains(err.Error(), "empty") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := readTokenFile(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Fatal("a missing file gave a token")
		}
	})
}

func TestRunTokenCommand(t *testing.T) {
	tok := newToken(t)
	ctx := context.Background()

	var stderr bytes.Buffer
	got, err := runTokenCommand(ctx, "echo from-vault >&2; printf ' %s \\nmore\\n' "+tok, &stderr)
	if err != nil || got != tok {
		t.Fatalf("got %q, %v", got, err)
	}
	if stderr.String() != "from-vault\n" {
		t.Errorf("the command's stderr was not passed through: %q", stderr.String())
	}

	if _, err := runTokenCommand(ctx, "echo "+tok+"; exit 3", nil); err == nil ||
		!strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("a failing command: err = %v", err)
	}
	if _, err := runTokenCommand(ctx, "true", nil); err == nil ||
		!strings.Contains(err.Error(), "printed nothing") {
		t.Errorf("a silent command: err = %v", err)
	}

	// A command that outlives its context is killed with everything it started.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := runTokenCommand(short, "sleep 30 & sleep 30", nil); err == nil {
		t.Error("a hanging command gave a token")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a hanging command held on for %v", d)
	}
}

func TestSources(t *testing.T) {
	tok := newToken(t)
	ctx := context.Background()

	cmd := CommandSource("token command", "echo "+tok, nil)
	if got, err := cmd.Token(ctx); err != nil || got != tok || cmd.Fixed {
		t.Fatalf("command source: %q, %v, fixed=%v", got, err, cmd.Fixed)
	}

	junk := CommandSource("token command", "printf 'sec%s' ret-output", nil)
	if _, err := junk.Token(ctx); err == nil ||
		!strings.Contains(err.Error(), "not a tokengate token") ||
		strings.Contains(err.Error(), "secret-output") {
		t.Fatalf("junk output: err = %v; want a refusal that does not quote it", err)
	}

	fixed := FixedSource(EnvToken, tok)
	if got, err := fixed.Token(ctx); err != nil || got != tok || !fixed.Fixed {
		t.Fatalf("fixed source: %q, %v, fixed=%v", got, err, fixed.Fixed)
	}
	if _, err := FixedSource(EnvToken, "").Token(ctx); err == nil {
		t.Fatal("an empty fixed source gave a token")
	}

	file := FileSource(writeTokenFile(t, tok, 0o600))
	if got, err := file.Token(ctx); err != nil || got != tok {
		t.Fatalf("file source: %q, %v", got, err)
	}
}

// A token command that leaves a background process holding its stdout still
// delivers the token it printed.
func TestTokenCommandWithBackgroundChild(t *testing.T) {
	tok, err := runTokenCommand(context.Background(), "echo tg_from_cmd; sleep 5 &", io.Discard)
	if err != nil || tok != "tg_from_cmd" {
		t.Fatalf("got %q, %v", tok, err)
	}
}
