package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// `gateway dev` prints a token and commands that work as printed, and its
// embedded store answers redis-cli.
func TestDevPrintsWorkingCommands(t *testing.T) {
	port := freePort(t)
	cmd := exec.Command(gatewayBin, "dev", "--listen", "127.0.0.1:"+strconv.Itoa(port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var script []string
	var storePort string
	deadline := time.After(20 * time.Second)
	for len(script) < 3 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("dev exited early; printed so far: %v", script)
			}
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, "export SSHPASS=") || strings.HasPrefix(trimmed, "rsync ") {
				script = append(script, trimmed)
			}
			if m := regexp.MustCompile(`redis-cli -p (\d+)`).FindStringSubmatch(line); m != nil {
				storePort = m[1]
			}
		case <-deadline:
			t.Fatalf("dev printed no rsync commands within 20s; got %v", script)
		}
	}
	if storePort == "" {
		t.Fatal("dev printed no store address")
	}

	work := t.TempDir()
	run := exec.Command("sh", "-c", strings.Join(script, "\n"))
	run.Dir = work
	res := runCmd(t, run)
	if res.code != 0 {
		t.Fatalf("the printed commands failed (exit %d):\n%s\n%s", res.code, strings.Join(script, "\n"), res.stderr)
	}
	got, err := os.ReadFile(filepath.Join(work, "tokengate-copy", "hello.txt"))
	if err != nil || string(got) != "hello from tokengate dev\n" {
		t.Fatalf("pulled copy: %q, %v", got, err)
	}

	// As root the jail is always available; dev must not fall back.
	if os.Geteuid() == 0 && strings.Contains(stderr.String(), "UNCONFINED") {
		t.Fatalf("dev ran rsync unconfined as root:\n%s", stderr.String())
	}

	out, err := exec.Command("redis-cli", "-p", storePort, "--scan", "--pattern", "tokengate:token:*").Output()
	if err != nil || !strings.HasPrefix(string(out), "tokengate:token:") {
		t.Fatalf("redis-cli against the embedded store: %q %v", out, err)
	}
}
