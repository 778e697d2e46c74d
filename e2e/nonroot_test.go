package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobodyWithoutUserNamespaces runs the gateway as uid 65534 in a user
// namespace whose limit on further user namespaces is 0: a non-root gateway
// on a kernel that allows it neither root nor unprivileged namespaces.
func nobodyWithoutUserNamespaces(t *testing.T, args ...string) *exec.Cmd {
	if os.Geteuid() != 0 {
		t.Skip("needs root to build the test's user namespace")
	}
	// t.TempDir's parent is private to root; uid 65534 needs a way in.
	dir, err := os.MkdirTemp("", "tokengate-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	serve := append([]string{gatewayBin, "serve", "--listen", "127.0.0.1:" + itoa(freePort(t)),
		"--redis", "redis://127.0.0.1:" + itoa(freePort(t)) + "/0",
		"--data-dir", filepath.Join(dir, "data"), "--state-dir", filepath.Join(dir, "state")}, args...)
	script := `echo 0 > /proc/sys/user/max_user_namespaces && ` +
		`exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"`
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, serve...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}},

		GidMappingsEnableSetgroups: true,
	}
	return cmd
}

// Without root and without user namespaces the gateway refuses to start,
// and says how to run unconfined for development; with that flag it starts
// and says loudly that the jail is off.
func TestNonRootWithoutNamespacesRefusesToStart(t *testing.T) {
	res := runCmd(t, nobodyWithoutUserNamespaces(t))
	if res.code == 0 || !strings.Contains(res.stderr, "--insecure-no-jail") {
		t.Fatalf("exit %d, stderr:\n%s", res.code, res.stderr)
	}

	cmd := nobodyWithoutUserNamespaces(t, "--insecure-no-jail")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	warned := false
	deadline := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("the gateway exited with --insecure-no-jail")
			}
			if strings.Contains(line, `"jail.disabled"`) && strings.Contains(line, `"warning"`) {
				warned = true
			}
			if strings.Contains(line, `"gateway.ready"`) {
				if !warned {
					t.Fatal("started unconfined without a warning first")
				}
				return
			}
		case <-deadline:
			t.Fatal("the gateway with --insecure-no-jail did not become ready")
		}
	}
}
