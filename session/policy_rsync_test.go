package session

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/auth"
)

// These tests drive the real rsync client against the real rsync server,
// with this package's parser and policy in between. The test binary itself
// plays the remote end: rsync -e runs a script that re-enters it in
// TestFakeGatewayProcess, which does what the gateway does minus the jail
// (rsync runs with the root as its working directory instead of /data).

const fakeGatewayEnv = "TOKENGATE_TEST_FAKE_GATEWAY"

// TestFakeGatewayProcess is not a test: it is the remote end of the tests
// below when the test binary is started by their fake ssh.
func TestFakeGatewayProcess(t *testing.T) {
	if os.Getenv(fakeGatewayEnv) != "1" {
		t.Skip("helper process for the real-rsync tests")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	// ssh joins the words after the host with spaces into one command string.
	raw := strings.Join(args[1:], " ")
	os.Exit(runFakeGateway(raw, os.Getenv("TG_ROOT"), os.Getenv("TG_SCOPES")))
}

func runFakeGateway(raw, root, scopeList string) int {
	scopes, err := auth.ParseScopes(scopeList)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 2
	}
	inv, err := ParseCommand(raw)
	if err == nil && inv.Protected {
		err = inv.ReadProtectedArgs(os.Stdin)
	}
	var plan *Plan
	if err == nil {
		plan, err = Authorize(inv, scopes)
	}
	if err != nil {
		os.Stderr.WriteString("gateway: " + err.Error() + "\n")
		return 1
	}

	cmd := exec.Command("rsync", plan.Argv[1:]...)
	cmd.Dir = root
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if plan.Stdin != nil {
		// Like the gateway's pump: the approved list first, then the client's
		// bytes. A pipe, not an io.Reader, so Wait does not wait on the client.
		pr, pw, err := os.Pipe()
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			return 2
		}
		cmd.Stdin = pr
		go func() {
			_, _ = io.Copy(pw, io.MultiReader(bytes.NewReader(plan.Stdin), os.Stdin))
			pw.Close()
		}()
	}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		os.Stderr.WriteString(err.Error() + "\n")
		return 2
	}
	return 0
}

type rsyncRig struct {
	t     *testing.T
	root  string // the token's root, as the server sees it
	local string // the client's side
	ssh   string
}

func newRsyncRig(t *testing.T) *rsyncRig {
	t.Helper()
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed")
	}
	dir := t.TempDir()
	rig := &rsyncRig{t: t, root: filepath.Join(dir, "root"), local: filepath.Join(dir, "local"),
		ssh: filepath.Join(dir, "ssh")}
	for _, d := range []string{rig.root, rig.local} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nexec '" + self + "' -test.run='^TestFakeGatewayProcess$' -- \"$@\"\n"
	if err := os.WriteFile(rig.ssh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return rig
}

// rsync runs the client in rig.local and returns its combined output.
func (rig *rsyncRig) rsync(scopes string, args ...string) (string, error) {
	rig.t.Helper()
	cmd := exec.Command("rsync", append([]string{"-e", rig.ssh}, args...)...)
	cmd.Dir = rig.local
	cmd.Env = append(os.Environ(), fakeGatewayEnv+"=1", "TG_ROOT="+rig.root, "TG_SCOPES="+scopes)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (rig *rsyncRig) write(base, name, body string) {
	rig.t.Helper()
	p := filepath.Join(base, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		rig.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		rig.t.Fatal(err)
	}
}

func (rig *rsyncRig) expectFile(base, name, body string) {
	rig.t.Helper()
	got, err := os.ReadFile(filepath.Join(base, name))
	if err != nil {
		rig.t.Fatalf("%s: %v", name, err)
	}
	if string(got) != body {
		rig.t.Fatalf("%s = %q, want %q", name, got, body)
	}
}

func (rig *rsyncRig) expectMissing(base, name string) {
	rig.t.Helper()
	if _, err := os.Lstat(filepath.Join(base, name)); !errors.Is(err, os.ErrNotExist) {
		rig.t.Fatalf("%s exists (err %v), want it gone", name, err)
	}
}

func TestRealRsyncPushAndPull(t *testing.T) {
	rig := newRsyncRig(t)
	rig.write(rig.local, "src/a.txt", "alpha")
	rig.write(rig.local, "src/dir with space/b$x;y.txt", "beta")

	out, err := rig.rsync("write", "-a", "src/", "gw:dst")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	rig.expectFile(rig.root, "dst/a.txt", "alpha")
	rig.expectFile(rig.root, "dst/dir with space/b$x;y.txt", "beta")

	out, err = rig.rsync("read", "-a", "gw:/dst/", "back")
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	rig.expectFile(rig.local, "back/dir with space/b$x;y.txt", "beta")

	rig.write(rig.root, "dst/dir with space/c.txt", "gamma")
	rig.write(rig.root, "dst/dir with space/d.md", "delta")
	out, err = rig.rsync("read", "-a", "gw:dst/dir with space/*.txt", "glob/")
	if err != nil {
		t.Fatalf("pull with a glob: %v\n%s", err, out)
	}
	rig.expectFile(rig.local, "glob/b$x;y.txt", "beta")
	rig.expectFile(rig.local, "glob/c.txt", "gamma")
	rig.expectMissing(rig.local, "glob/d.md")

	out, err = rig.rsync("read", "--list-only", "gw:")
	if err != nil || !strings.Contains(out, "dst") {
		t.Fatalf("list-only: %v\n%s", err, out)
	}
}

func TestRealRsyncProtectedArgs(t *testing.T) {
	rig := newRsyncRig(t)
	rig.write(rig.local, "src/a.txt", "alpha")

	out, err := rig.rsync("write", "-as", "--mkpath", "-z", "--partial-dir", ".p",
		"src/", "gw:/abs/d st/")
	if err != nil {
		t.Fatalf("push -s: %v\n%s", err, out)
	}
	rig.expectFile(rig.root, "abs/d st/a.txt", "alpha")

	out, err = rig.rsync("read", "-as", "gw:/abs/d st/a.txt", "got.txt")
	if err != nil {
		t.Fatalf("pull -s: %v\n%s", err, out)
	}
	rig.expectFile(rig.local, "got.txt", "alpha")

	out, err = rig.rsync("read", "-as", "gw:/../etc/passwd", "x")
	if err == nil || !strings.Contains(out, "leaves the token's root") {
		t.Fatalf("pull -s of /../etc/passwd: err %v\n%s", err, out)
	}
}

func TestRealRsyncDeleteNeedsScope(t *testing.T) {
	rig := newRsyncRig(t)
	rig.write(rig.local, "src/keep.txt", "keep")
	rig.write(rig.root, "dst/stale.txt", "stale")

	out, err := rig.rsync("write", "-a", "--delete", "src/", "gw:dst/")
	if err == nil || !strings.Contains(out, "lacks delete scope (needed by --delete)") {
		t.Fatalf("push --delete without delete scope: err %v\n%s", err, out)
	}
	rig.expectFile(rig.root, "dst/stale.txt", "stale")

	out, err = rig.rsync("write,delete", "-a", "--delete", "src/", "gw:dst/")
	if err != nil {
		t.Fatalf("push --delete: %v\n%s", err, out)
	}
	rig.expectMissing(rig.root, "dst/stale.txt")
	rig.expectFile(rig.root, "dst/keep.txt", "keep")
}

func TestRealRsyncFilesFromAndRelative(t *testing.T) {
	rig := newRsyncRig(t)
	rig.write(rig.root, "src/a.txt", "alpha")
	rig.write(rig.root, "src/sub/b.txt", "beta")
	rig.write(rig.local, "list", "a.txt\nsub/b.txt\n")

	out, err := rig.rsync("read", "-a", "--files-from=list", "gw:src/", "ff")
	if err != nil {
		t.Fatalf("pull --files-from: %v\n%s", err, out)
	}
	rig.expectFile(rig.local, "ff/sub/b.txt", "beta")

	out, err = rig.rsync("read", "-aR", "gw:/src/./sub/b.txt", "rel")
	if err != nil {
		t.Fatalf("pull -R: %v\n%s", err, out)
	}
	rig.expectFile(rig.local, "rel/sub/b.txt", "beta")
}

func TestRealRsyncSymlinkIsMunged(t *testing.T) {
	rig := newRsyncRig(t)
	if err := os.MkdirAll(filepath.Join(rig.local, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(rig.local, "src", "link")); err != nil {
		t.Fatal(err)
	}
	out, err := rig.rsync("write", "-a", "src/", "gw:dst")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	target, err := os.Readlink(filepath.Join(rig.root, "dst", "link"))
	if err != nil {
		t.Fatal(err)
	}
	if target == "/etc/passwd" {
		t.Fatalf("pushed symlink kept its target %q; --munge-links did not apply", target)
	}
}
