package client

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestIsPasswordPrompt(t *testing.T) {
	cases := map[string]bool{
		"deploy@gw's password: ":   true,
		"(deploy@gw) Password: ":   true,
		"Password:":                true,
		"deploy@[::1]'s password:": true,
		"Enter passphrase for key '/root/.ssh/id_ed25519': ": false,
		"Verification code: ":                                false,
		"The authenticity of host '[127.0.0.1]:2222' can't be established.\n" +
			"ED25519 key fingerprint is SHA256:x.\n" +
			"Are you sure you want to continue connecting (yes/no/[fingerprint])? ": false,
		"Allow use of key /root/.ssh/id_ed25519?\nKey fingerprint SHA256:x.": false,
		"Password: is what you typed?":                                       false,
		"":                                                                   false,
		"Your new password: (retype) x":                                      false,
	}
	for prompt, want := range cases {
		if got := IsPasswordPrompt(prompt); got != want {
			t.Errorf("IsPasswordPrompt(%q) = %v, want %v", prompt, got, want)
		}
	}
}

// env is a fake environment for one askpass run.
type env map[string]string

func (e env) get(name string) string { return e[name] }

func TestAskpassSources(t *testing.T) {
	envTok, cmdTok, fileTok := newToken(t), newToken(t), newToken(t)
	goodFile := writeTokenFile(t, fileTok+"\n", 0o600)
	openFile := writeTokenFile(t, fileTok+"\n", 0o644)
	cmd := "printf '%s\\n' " + cmdTok

	cases := []struct {
		name string
		env  env
		want string // the token printed, or "" for a refusal
		err  string
	}{
		{"env first", env{EnvToken: envTok, EnvTokenCmd: cmd, EnvTokenFile: goodFile}, envTok, ""},
		{"cmd before file", env{EnvTokenCmd: cmd, EnvTokenFile: goodFile}, cmdTok, ""},
		{"file", env{EnvTokenFile: goodFile}, fileTok, ""},
		{"file others can read", env{EnvTokenFile: openFile}, "",
			"refusing TOKENGATE_TOKEN_FILE: token file " + openFile + " has mode 0644"},
		{"failing cmd", env{EnvTokenCmd: "exit 4"}, "",
			"TOKENGATE_TOKEN_CMD failed: exit status 4"},
		{"junk", env{EnvToken: "hunter2"}, "", "TOKENGATE_TOKEN gave something that is not"},
		{"nothing", env{}, "", "no token: set TOKENGATE_TOKEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Askpass(context.Background(), "deploy@gw's password: ", c.env.get,
				&stdout, &stderr)
			if c.want != "" {
				if err != nil || stdout.String() != c.want+"\n" {
					t.Fatalf("printed %q, err %v; want the token and a newline",
						stdout.String(), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("err = %v, want one containing %q", err, c.err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("the refusal is more than one line: %q", err)
			}
			if stdout.Len() != 0 {
				t.Fatalf("a refusal printed %q on stdout", stdout.String())
			}
		})
	}
}

func TestAskpassAnswersOnlyPasswordPrompts(t *testing.T) {
	tok := newToken(t)
	hostKey := "The authenticity of host '[127.0.0.1]:2222' can't be established.\n" +
		"ED25519 key fingerprint is SHA256:x.\n" +
		"Are you sure you want to continue connecting (yes/no/[fingerprint])? "
	var stdout bytes.Buffer
	err := Askpass(context.Background(), hostKey, env{EnvToken: tok}.get, &stdout, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "continue connecting") ||
		!strings.Contains(err.Error(), "known_hosts") {
		t.Fatalf("host key question: err = %v", err)
	}
	if stdout.Len() != 0 {
		t.Fatal("the token was offered as the answer to a host key question")
	}

	err = Askpass(context.Background(), "Password:", env{EnvToken: tok,
		"SSH_ASKPASS_PROMPT": "confirm"}.get, &stdout, &bytes.Buffer{})
	if err == nil || stdout.Len() != 0 {
		t.Fatalf("a confirmation was answered: err = %v", err)
	}
}

// Under sync, askpass answers each ssh once: ssh asks again only after the
// gateway refused the answer, and the refusal is noted for sync.
func TestAskpassAnswersOnce(t *testing.T) {
	tok := newToken(t)
	state := t.TempDir()
	e := env{EnvToken: tok, EnvAskpass: state}

	var first bytes.Buffer
	if err := Askpass(context.Background(), "Password:", e.get, &first, os.Stderr); err != nil ||
		first.String() != tok+"\n" {
		t.Fatalf("first prompt: %q, %v", first.String(), err)
	}
	if takeRefusedLogins(state) {
		t.Fatal("a first answer was noted as refused")
	}

	// The parent here is the test binary, not ssh, so nothing is stopped.
	var second bytes.Buffer
	err := Askpass(context.Background(), "Password:", e.get, &second, os.Stderr)
	if err == nil || second.Len() != 0 {
		t.Fatalf("second prompt: printed %q, err %v; want a refusal", second.String(), err)
	}
	if !takeRefusedLogins(state) {
		t.Fatal("the refused login was not noted")
	}
	if takeRefusedLogins(state) {
		t.Fatal("the note was not cleared")
	}
}

func TestProcessStart(t *testing.T) {
	first := processStart(os.Getpid())
	if first == "" || processStart(os.Getpid()) != first {
		t.Fatalf("start time %q is missing or changes", first)
	}
	if processStart(1<<30) != "" {
		t.Fatal("a start time for a process that does not exist")
	}
}
