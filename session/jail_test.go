package session

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the real rsync client against a jailed rsync server. The test binary
// plays both the jail child (IsJailChild) and the remote end of `rsync -e`: a small script
// execs it with jailTestServeEnv set, and it then does what the gateway does after the
// policy: NewJail, Command, Run. No argv policy runs here, on purpose: the jail alone must
// hold.

const jailTestServeEnv = "TOKENGATE_JAIL_TEST_SERVE"

// init rather than TestMain, so that this file does not fight another test file of the
// package over the one TestMain; it runs before any test or flag parsing either way.
func init() {
	if IsJailChild() {
		RunJailChild()
	}
	if path := os.Getenv(jailTestServeEnv); path != "" {
		os.Exit(jailTestServe(path))
	}
}

// jailTestServeConfig is what the remote end of a test transfer runs with.
type jailTestServeConfig struct {
	Jail     JailConfig
	Root     string
	Writable bool
}

// jailTestServe is the remote end: rsync calls it as `<script> x rsync --server ...`.
func jailTestServe(configPath string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "jail test server:", err)
		return 99
	}
	data, err := os.ReadFile(configPath)
	if err != nil {
		return fail(err)
	}
	var cfg jailTestServeConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fail(err)
	}
	argv := os.Args[1:]
	for len(argv) > 0 && argv[0] != "rsync" {
		argv = argv[1:]
	}
	j, err := NewJail(cfg.Jail)
	if err != nil {
		return fail(err)
	}
	cmd, err := j.Command(Spec{Root: cfg.Root, Writable: cfg.Writable, Argv: argv})
	if err != nil {
		return fail(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode()
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// jailTestUID is the jail uid of this test run, distinct per run so that scanning /proc for
// it finds only this run's processes.
var jailTestUID = uint32(64100 + os.Getpid()%400)

func requireJailRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds namespaces and switches to the jail uid " +
			"(TestJailUserNamespace covers non-root mode, but needs root to set it up)")
	}
}

// checkNoMountLeak fails the test if the host's mount table differs at its end.
func checkNoMountLeak(t *testing.T) {
	t.Helper()
	before, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		after, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Errorf("host mounts changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// jailTestEnv is one jail with one token root, ready for transfers.
type jailTestEnv struct {
	cfg    JailConfig
	jail   *Jail
	data   string // host dir holding the token roots
	root   string // the token root
	helper string // the script rsync -e runs
}

func newJailTestEnv(t *testing.T) *jailTestEnv {
	t.Helper()
	return newJailTestEnvFor(t, jailTestUID, jailTestUID)
}

// newJailTestEnvFor builds a jail whose files on the host belong to uid:gid.
func newJailTestEnvFor(t *testing.T, uid, gid uint32) *jailTestEnv {
	t.Helper()
	checkNoMountLeak(t)
	cfg := JailConfig{
		RsyncPath: "/usr/bin/rsync",
		StateDir:  t.TempDir(),
		UID:       jailTestUID,
		GID:       jailTestUID,
	}
	j, err := NewJail(cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	root, err := PrepareRoot(data, "tokens/t1", uid, gid)
	if err != nil {
		t.Fatal(err)
	}
	return &jailTestEnv{cfg: cfg, jail: j, data: data, root: root,
		helper: writeJailHelper(t, t.TempDir())}
}

// writeJailHelper writes the script that rsync -e runs: it re-enters this test binary.
func writeJailHelper(t *testing.T, dir string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "jail-ssh")
	script := "#!/bin/sh\nexec '" + exe + "' \"$@\"\n"
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return helper
}

// rsyncCmd prepares the real rsync client with the jailed server as its remote end.
func (e *jailTestEnv) rsyncCmd(t *testing.T, ctx context.Context, writable bool,
	args ...string) *exec.Cmd {
	t.Helper()
	cfg := jailTestServeConfig{Jail: e.cfg, Root: e.root, Writable: writable}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "serve.json")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	full := append([]string{"-e", e.helper}, args...)
	cmd := exec.CommandContext(ctx, "/usr/bin/rsync", full...)
	cmd.Env = append(os.Environ(), jailTestServeEnv+"="+cfgPath)
	return cmd
}

// rsync runs one transfer with a deadline and returns its combined output.
func (e *jailTestEnv) rsync(t *testing.T, writable bool, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := e.rsyncCmd(t, ctx, writable, args...).CombinedOutput()
	return string(out), err
}

// treeOf maps each path under dir to a description of its type and content.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			tree[rel] = "link:" + target
			return err
		case d.IsDir():
			tree[rel] = "dir"
		default:
			content, err := os.ReadFile(path)
			tree[rel] = "file:" + string(content)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func sameTree(t *testing.T, want, got map[string]string) {
	t.Helper()
	for path, w := range want {
		if path == "." {
			continue
		}
		if g, ok := got[path]; !ok {
			t.Errorf("%s missing", path)
		} else if g != w {
			t.Errorf("%s differs (%d vs %d bytes of description)", path, len(g), len(w))
		}
	}
	for path := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("%s unexpected", path)
		}
	}
}

// writeJailTestFiles fills dir with a small tree and one file large enough to need
// several rsync blocks.
func writeJailTestFiles(t *testing.T, dir string) {
	t.Helper()
	big := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(big)
	files := map[string][]byte{
		"a.txt":           []byte("alpha\n"),
		"sub/b.txt":       []byte("beta\n"),
		"sub/deep/c.bin":  {0, 1, 2, 3, 255},
		"sub/deep/big.db": big,
		"empty":           {},
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("sub/b.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}

func TestJailPushPull(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	src := t.TempDir()
	writeJailTestFiles(t, src)

	out, err := e.rsync(t, true, "-a", "--delete", src+"/", "x:dst/")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	sameTree(t, treeOf(t, src), treeOf(t, filepath.Join(e.root, "dst")))

	// Owned by the jail uid on the host: rsync ran as that uid, not as root.
	for _, name := range []string{"dst", "dst/a.txt", "dst/sub/deep/big.db"} {
		info, err := os.Lstat(filepath.Join(e.root, name))
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if st.Uid != jailTestUID || st.Gid != jailTestUID {
			t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid,
				jailTestUID, jailTestUID)
		}
	}

	// Pull back through a read-only spec, as a read-scope token would.
	back := t.TempDir()
	out, err = e.rsync(t, false, "-a", "x:dst/", back+"/")
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	sameTree(t, treeOf(t, src), treeOf(t, back))

	// A second push that changes one file goes through the delta path and --delete.
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "empty")); err != nil {
		t.Fatal(err)
	}
	out, err = e.rsync(t, true, "-az", "--delete", "--checksum", src+"/", "x:dst/")
	if err != nil {
		t.Fatalf("second push: %v\n%s", err, out)
	}
	sameTree(t, treeOf(t, src), treeOf(t, filepath.Join(e.root, "dst")))
}

func TestJailReadOnlyRootRefusesPush(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	keep := filepath.Join(e.root, "keep.txt")
	if err := os.WriteFile(keep, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeJailTestFiles(t, src)
	before := treeOf(t, e.root)

	for _, args := range [][]string{
		{"-a", src + "/", "x:dst/"},
		{"-a", src + "/", "x:."},
		{"-a", "--delete", t.TempDir() + "/", "x:."},
	} {
		out, err := e.rsync(t, false, args...)
		if err == nil {
			t.Errorf("push %v to a read-only root succeeded:\n%s", args, out)
		}
		if !strings.Contains(out, "Read-only file system") {
			t.Errorf("push %v: want the kernel's EROFS in the output, got:\n%s", args, out)
		}
	}
	sameTree(t, before, treeOf(t, e.root))
}

// TestJailWritesOnlyData pushes with a writable spec to places outside /data: the jail's
// own tree is a read-only tmpfs and read-only binds, so every one fails.
func TestJailWritesOnlyData(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	src := t.TempDir()
	name := fmt.Sprintf("tokengate-jail-probe-%d", os.Getpid())
	if err := os.WriteFile(filepath.Join(src, name), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"x:/", "x:../", "x:/usr/bin/", "x:/lib/", "x:/tmp/"} {
		out, err := e.rsync(t, true, "-a", src+"/", dst)
		if err == nil {
			t.Errorf("push to %s succeeded:\n%s", dst, out)
		}
	}
	for _, dir := range []string{"/", "/usr/bin", "/lib", "/tmp", e.data, e.jail.scaffold} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("the push landed in %s on the host", dir)
		}
	}
}

func TestJailHidesHost(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil || len(passwd) == 0 {
		t.Skip("no /etc/passwd on this host to look for")
	}
	// Another token's root, next to this one on the host.
	other := filepath.Join(e.data, "tokens", "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "secret"), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A symlink to / planted in the root, as a client with write scope could.
	if err := os.Symlink("/", filepath.Join(e.root, "escape")); err != nil {
		t.Fatal(err)
	}

	for _, src := range []string{"x:/etc/passwd", "x:../other/", "x:../other/secret",
		"x:/proc/1/environ", "x:escape/etc/passwd", "x:escape/proc/self/environ"} {
		dst := t.TempDir()
		out, err := e.rsync(t, false, "-aL", src, dst+"/")
		if err == nil {
			t.Errorf("pull %s succeeded:\n%s", src, out)
		}
		if got := treeOf(t, dst); len(got) != 1 {
			t.Errorf("pull %s brought %v", src, got)
		}
	}

	// Following the link to / shows the jail's own /: rsync, its libraries, nothing else,
	// and /data left out so the walk does not loop through the link forever.
	dst := t.TempDir()
	out, err := e.rsync(t, false, "-aL", "--exclude=/data", "x:escape/", dst+"/")
	if err != nil {
		t.Fatalf("pull of the jail's /: %v\n%s", err, out)
	}
	tops := map[string]bool{}
	for path, desc := range treeOf(t, dst) {
		top, _, _ := strings.Cut(path, "/")
		tops[top] = true
		if bytes.Contains([]byte(desc), passwd) {
			t.Errorf("%s holds the host's /etc/passwd", path)
		}
	}
	for top := range tops {
		switch top {
		case ".", "usr", "lib", "lib64":
		default:
			t.Errorf("the jail's / shows %q", top)
		}
	}
	t.Logf("the jail's / as seen through the link: %v", sortedKeys(tops))
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// startIdleJail starts a jailed sender whose client never speaks, and waits until the
// child has exec'd rsync.
func startIdleJail(t *testing.T, e *jailTestEnv, writable bool) (*exec.Cmd, io.Closer) {
	t.Helper()
	cmd, err := e.jail.Command(Spec{Root: e.root, Writable: writable, SessionID: "idle",
		Argv: []string{"rsync", "--server", "--sender", "-logDtpre.iLsfxCIvu", ".", "."}})
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	closeExtraFiles(cmd)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	waitFor(t, 10*time.Second, "rsync to start in the jail", func() bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		return err == nil && strings.TrimSpace(string(comm)) == "rsync"
	})
	return cmd, stdin
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return fields
}

// checkPowerless checks the exec'd rsync holds no capability and cannot gain one.
func checkPowerless(t *testing.T, status map[string]string) {
	t.Helper()
	for _, key := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if status[key] != "0000000000000000" {
			t.Errorf("%s = %s, want none", key, status[key])
		}
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %s", status["NoNewPrivs"])
	}
}

func TestJailProcessView(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	cmd, _ := startIdleJail(t, e, false)
	pid := cmd.Process.Pid

	if u, g := e.jail.RootOwner(); u != jailTestUID || g != jailTestUID {
		t.Errorf("RootOwner %d:%d, want the jail's %d", u, g, jailTestUID)
	}
	status := procStatus(t, pid)
	uid := strconv.Itoa(int(jailTestUID))
	if want := strings.Repeat(uid+" ", 3) + uid; status["Uid"] != want ||
		status["Gid"] != want {
		t.Errorf("Uid %q Gid %q, want %q", status["Uid"], status["Gid"], want)
	}
	if status["Groups"] != "" {
		t.Errorf("supplementary groups %q", status["Groups"])
	}
	checkPowerless(t, status)
	if status["NSpid"] != strconv.Itoa(pid)+" 1" {
		t.Errorf("NSpid %q: rsync should be PID 1 of its own namespace", status["NSpid"])
	}

	// Its / holds only rsync's files and /data; its cwd is /data.
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, entry := range entries {
		names = append(names, entry.Name())
	}
	if got := strings.Join(names, " "); got != "data lib lib64 usr" {
		t.Errorf("jail / holds %q", got)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != JailDataDir {
		t.Errorf("cwd %q", cwd)
	}

	// Only stdin, stdout and stderr crossed the exec: no handle on the host survives.
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 3 {
		var links []string
		for _, fd := range fds {
			link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			links = append(links, fd.Name()+"="+link)
		}
		t.Errorf("open fds %v, want only 0, 1 and 2", links)
	}

	// Environment: the fixed one, nothing from the gateway.
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
	if strings.Join(env, " ") != strings.Join(e.jail.env(), " ") {
		t.Errorf("environment %q", env)
	}

	// Mount flags of /data and of /, and the limits.
	mountinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		opts := "," + f[5] + ","
		if !strings.Contains(opts, ",ro,") || !strings.Contains(opts, ",nosuid,") {
			t.Errorf("mount %s is not ro,nosuid: %s", f[4], f[5])
		}
		if f[4] == JailDataDir && (!strings.Contains(opts, ",nodev,") ||
			!strings.Contains(opts, ",noexec,")) {
			t.Errorf("/data options %s", f[5])
		}
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Max core file size        0                    0",
		fmt.Sprintf("Max processes             %-20d %-20d", defaultJailMaxProcs,
			defaultJailMaxProcs),
		fmt.Sprintf("Max open files            %-20d %-20d", defaultJailMaxOpenFiles,
			defaultJailMaxOpenFiles),
	} {
		if !strings.Contains(string(limits), want) {
			t.Errorf("limits lack %q:\n%s", want, limits)
		}
	}
}

// TestJailConcurrentSessions runs several jails at once over the one scaffold: each sees
// its own root at /data and nothing of the others.
func TestJailConcurrentSessions(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	const sessions = 4
	pids := make([]int, sessions)
	for i := range sessions {
		root, err := PrepareRoot(e.data, fmt.Sprintf("tokens/s%d", i), jailTestUID, jailTestUID)
		if err != nil {
			t.Fatal(err)
		}
		marker := filepath.Join(root, fmt.Sprintf("marker-%d", i))
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		session := *e
		session.root = root
		cmd, _ := startIdleJail(t, &session, i%2 == 0)
		pids[i] = cmd.Process.Pid
	}
	for i, pid := range pids {
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root%s", pid, JailDataDir))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != fmt.Sprintf("marker-%d", i) {
			t.Errorf("session %d sees %v in /data", i, entries)
		}
	}
	if entries, _ := os.ReadDir(e.jail.scaffold); len(entries) != 0 {
		t.Errorf("the scaffold on the host is not empty: %v", entries)
	}
}

// jailProcesses lists the pids of processes running as the jail uid or inside the given
// PID namespace.
func jailProcesses(t *testing.T, uid uint32, pidNS string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue // gone meanwhile
		}
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" &&
				(f[1] == strconv.Itoa(int(uid)) || (pidNS != "" && ns == pidNS)) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func TestJailKillEndsEverything(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	cmd, _ := startIdleJail(t, e, true)
	pidNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if own, _ := os.Readlink("/proc/self/ns/pid"); own == pidNS {
		t.Fatal("the jail shares the test's PID namespace")
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, 2*time.Second, "the jail's processes to end", func() bool {
		return len(jailProcesses(t, jailTestUID, pidNS)) == 0
	})
}

func TestJailKillClientMidTransfer(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	src := t.TempDir()
	big := make([]byte, 24<<20)
	rand.New(rand.NewSource(2)).Read(big)
	if err := os.WriteFile(filepath.Join(src, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := e.rsyncCmd(t, ctx, true, "-a", "--bwlimit=512", src+"/", "x:dst/")
	var out bytes.Buffer
	client.Stdout, client.Stderr = &out, &out
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Process.Kill(); _ = client.Wait() }()

	// Mid-transfer: the receiver's temp file exists and has data in it.
	waitFor(t, 30*time.Second, "the transfer to be under way", func() bool {
		matches, _ := filepath.Glob(filepath.Join(e.root, "dst", ".big.*"))
		for _, m := range matches {
			if info, err := os.Stat(m); err == nil && info.Size() > 0 {
				return true
			}
		}
		return false
	})
	if n := len(jailProcesses(t, jailTestUID, "")); n == 0 {
		t.Fatal("no jail process found mid-transfer")
	}

	if err := client.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = client.Wait()
	waitFor(t, 2*time.Second, "the jail's processes to end", func() bool {
		return len(jailProcesses(t, jailTestUID, "")) == 0
	})
}

// TestJailChildFailsClosed shows that a child that cannot complete a step says which one
// and never runs rsync.
func TestJailChildFailsClosed(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	argv := []string{"rsync", "--version"}

	rootUID := *e.jail
	rootUID.cfg.UID = 0
	missingLib := *e.jail
	missingLib.files = append(append([]jailFile{}, e.jail.files...),
		jailFile{Host: filepath.Join(e.data, "no-such-lib"), Jail: "/lib/libnone.so"})
	intoData := *e.jail
	intoData.files = append(append([]jailFile{}, e.jail.files...),
		jailFile{Host: "/etc/passwd", Jail: JailDataDir + "/passwd"})

	for _, tc := range []struct {
		name string
		jail *Jail
		root string
		want string
	}{
		{"missing root", e.jail, filepath.Join(e.data, "nope"), "tokengate: jail: open root: "},
		{"symlinked root", e.jail, "/proc/self/cwd", "tokengate: jail: open root: "},
		{"uid 0", &rootUID, e.root, "tokengate: jail: read plan: uid and gid must be non-zero"},
		{"missing library", &missingLib, e.root, "tokengate: jail: bind /lib/libnone.so: "},
		{"file over /data", &intoData, e.root, "tokengate: jail: read plan: bad file"},
	} {
		cmd, err := tc.jail.jailCommand(tc.root, false, argv)
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err = cmd.Run()
		closeExtraFiles(cmd)
		exit, ok := err.(*exec.ExitError)
		if !ok || exit.ExitCode() != jailSetupFailed {
			t.Errorf("%s: got %v, want exit status %d", tc.name, err, jailSetupFailed)
		}
		if !strings.HasPrefix(stderr.String(), tc.want) ||
			strings.Count(stderr.String(), "\n") != 1 || stdout.Len() != 0 {
			t.Errorf("%s: stdout %q stderr %q, want one line starting %q", tc.name,
				stdout.String(), stderr.String(), tc.want)
		}
	}
}

func TestJailRsyncVersion(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string // "" means a parse error
		old  bool
	}{
		{"rsync  version 3.2.7  protocol version 31", "3.2.7", true},
		{"rsync  version v3.2.3  protocol version 31", "3.2.3", true},
		{"rsync  version 3.3.0  protocol version 31", "3.3.0", true},
		{"rsync  version 3.4.0pre1  protocol version 32", "3.4.0-pre", true},
		{"rsync  version 3.4.0  protocol version 32", "3.4.0", false},
		{"rsync  version 3.4.1  protocol version 32", "3.4.1", false},
		{"rsync  version 3.5.0  protocol version 32", "3.5.0", false},
		{"rsync  version 3.5.0dev  protocol version 32", "3.5.0-pre", false},
		{"rsync  version 4.0  protocol version 33", "4.0.0", false},
		{"rsync version 2.6.9 protocol version 29", "2.6.9", true},
		{"openrsync: protocol version 29", "", false},
		{"rsync  version x.y  protocol version 31", "", false},
		{"", "", false},
	} {
		v, err := parseRsyncVersion(tc.line)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%q: parsed as %v, want an error", tc.line, v)
			}
			continue
		}
		if err != nil || v.String() != tc.want || v.less(minRsyncVersion) != tc.old {
			t.Errorf("%q: got %v old=%v err=%v, want %s old=%v", tc.line, v,
				v.less(minRsyncVersion), err, tc.want, tc.old)
		}
	}
}

func TestJailRefusesOldOrMissingRsync(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "rsync-old")
	script := "#!/bin/sh\necho 'rsync  version 3.2.7  protocol version 31'\n"
	if err := os.WriteFile(old, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := JailConfig{RsyncPath: old, StateDir: dir, UID: jailTestUID, GID: jailTestUID}
	_, err := NewJail(cfg)
	if err == nil || !strings.Contains(err.Error(), "3.2.7") ||
		!strings.Contains(err.Error(), "3.4.0") {
		t.Errorf("old rsync: got %v", err)
	}
	cfg.Insecure = true
	if _, err := NewJail(cfg); err == nil {
		t.Error("old rsync accepted in insecure mode")
	}

	cfg.RsyncPath = filepath.Join(dir, "no-such-rsync")
	if _, err := NewJail(cfg); err == nil || !strings.HasPrefix(err.Error(), "tokengate: jail:") {
		t.Errorf("missing rsync: got %v", err)
	}
	cfg.RsyncPath = dir
	if _, err := NewJail(cfg); err == nil {
		t.Error("a directory accepted as rsync")
	}
}

func TestJailRefusesRootUID(t *testing.T) {
	requireJailRoot(t)
	_, err := NewJail(JailConfig{RsyncPath: "/usr/bin/rsync", StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "non-zero") {
		t.Errorf("uid 0: got %v", err)
	}
}

func TestJailPrepareRoot(t *testing.T) {
	data := t.TempDir()
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if os.Geteuid() == 0 {
		uid, gid = jailTestUID, jailTestUID
	}
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(data, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, rel := range []string{"../x", "a/../../x", "/abs", "/", "link", "link/sub",
		"file", "file/sub", "a\x00b"} {
		if _, err := PrepareRoot(data, rel, uid, gid); err == nil {
			t.Errorf("%q accepted", rel)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("something was created outside the data dir: %v", entries)
	}

	root, err := PrepareRoot(data, "team/./proj//deploy/", uid, gid)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(data, "team/proj/deploy"); root != want {
		t.Errorf("root %q, want %q", root, want)
	}
	for _, rel := range []string{"team", "team/proj", "team/proj/deploy"} {
		info, err := os.Lstat(filepath.Join(data, rel))
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if !info.IsDir() || info.Mode().Perm() != 0o750 || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %v owner %d:%d", rel, info.Mode(), st.Uid, st.Gid)
		}
	}

	// An existing dir keeps its owner and mode.
	if err := os.Mkdir(filepath.Join(data, "mine"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := PrepareRoot(data, "mine/new", uid, gid); err != nil {
		t.Fatal(err)
	}
	info, _ := os.Lstat(filepath.Join(data, "mine"))
	if st := info.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Getuid()) ||
		info.Mode().Perm() != 0o700 {
		t.Errorf("existing dir changed: %v %d", info.Mode(), st.Uid)
	}
	if root, err := PrepareRoot(data, "", uid, gid); err != nil || root != data {
		t.Errorf("empty rel: %q %v", root, err)
	}
}

func TestJailCommandRefusesBadSpecs(t *testing.T) {
	requireJailRoot(t)
	e := newJailTestEnv(t)
	link := filepath.Join(e.data, "link")
	if err := os.Symlink(e.root, link); err != nil {
		t.Fatal(err)
	}
	argv := []string{"rsync", "--server", ".", "."}
	for name, spec := range map[string]Spec{
		"relative root":   {Root: "tokens/t1", Argv: argv},
		"unclean root":    {Root: e.root + "/../t1", Argv: argv},
		"symlinked root":  {Root: link, Argv: argv},
		"missing root":    {Root: filepath.Join(e.data, "nope"), Argv: argv},
		"not rsync":       {Root: e.root, Argv: []string{"sh", "-c", "id"}},
		"no --server":     {Root: e.root, Argv: []string{"rsync", "--daemon"}},
		"NUL in argument": {Root: e.root, Argv: []string{"rsync", "--server", "a\x00b"}},
	} {
		if _, err := e.jail.Command(spec); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJailLibraries(t *testing.T) {
	files, dirs, err := jailFiles("/usr/bin/rsync")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, f := range files {
		byName[filepath.Base(f.Jail)] = f.Jail
		if _, err := os.Stat(f.Host); err != nil {
			t.Errorf("%s: %v", f.Host, err)
		}
	}
	for _, want := range []string{"rsync", "libc.so.6"} {
		if byName[want] == "" {
			t.Errorf("%s missing from %v", want, files)
		}
	}
	if len(dirs) == 0 {
		t.Error("no library dirs")
	}

	// The interpreter is the one PT_INTERP names, at that path.
	obj, err := readELF("/usr/bin/rsync")
	if err != nil {
		t.Fatal(err)
	}
	if obj.interp != "" && byName[filepath.Base(obj.interp)] != obj.interp {
		t.Errorf("interpreter %s not mapped at its path: %v", obj.interp, files)
	}
	t.Logf("jail files: %v; LD_LIBRARY_PATH dirs: %v", files, dirs)
}

func TestJailLdSoCacheParse(t *testing.T) {
	entries, err := readLdSoCache(ldSoCachePath)
	if os.IsNotExist(err) {
		t.Skip("no ld.so.cache on this host")
	}
	if err != nil {
		t.Fatal(err)
	}
	if paths := lookupLdCache(entries, "libc.so.6"); len(paths) == 0 {
		t.Errorf("libc.so.6 not in the cache (%d entries)", len(entries))
	}
	for _, bad := range [][]byte{nil, []byte("glibc-ld.so.cache1.1"),
		[]byte("ld.so-1.7.0\x00\xff\xff\xff\x7f"), bytes.Repeat([]byte{0xff}, 100)} {
		if _, err := parseLdSoCache(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestJailInsecureMode(t *testing.T) {
	root := t.TempDir()
	j, err := NewJail(JailConfig{RsyncPath: "/usr/bin/rsync", StateDir: t.TempDir(),
		Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if j.Mode() != "insecure" {
		t.Fatalf("mode %s", j.Mode())
	}
	cmd, err := j.Command(Spec{Root: root, Writable: true, Argv: []string{"rsync", "--server",
		"-logDtpre.iLsfxCIvu", "--partial-dir=/data/.partial", ".", "/data/dst/", "rel"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rsync", "--server", "-logDtpre.iLsfxCIvu",
		"--partial-dir=" + root + "/.partial", ".", root + "/dst/", "rel"}
	if strings.Join(cmd.Args, " ") != strings.Join(want, " ") || cmd.Dir != root {
		t.Errorf("args %q dir %q", cmd.Args, cmd.Dir)
	}
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "HOME=") &&
			!strings.HasPrefix(kv, "LC_ALL=") {
			t.Errorf("unexpected env %q", kv)
		}
	}
}

const jailTestUsernsEnv = "TOKENGATE_JAIL_TEST_USERNS"

// TestJailUserNamespace runs TestJailUserNamespaceInner as an unprivileged user, where
// NewJail must fall back to an unprivileged user namespace and build the same jail.
func TestJailUserNamespace(t *testing.T) {
	requireJailRoot(t)
	const nobody = 65534
	base, err := os.MkdirTemp("", "tokengate-jail-userns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chown(base, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	// The test binary may sit in a dir the unprivileged user cannot reach: copy it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "session.test")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestJailUserNamespaceInner$",
		"-test.v", "-test.count=1")
	cmd.Dir = base
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + base, "TMPDIR=" + base,
		jailTestUsernsEnv + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
	}
	out, err := cmd.CombinedOutput()
	t.Logf("non-root run:\n%s", out)
	if err != nil {
		t.Fatalf("non-root run: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestJailUserNamespaceInner") {
		t.Fatal("the non-root run did not pass")
	}
}

func TestJailUserNamespaceInner(t *testing.T) {
	if os.Getenv(jailTestUsernsEnv) == "" {
		t.Skip("the non-root half of TestJailUserNamespace")
	}
	if os.Geteuid() == 0 {
		t.Fatal("must run as a non-root user")
	}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	e := newJailTestEnvFor(t, uid, gid)
	if e.jail.Mode() != "userns" {
		t.Fatalf("mode %s, want userns", e.jail.Mode())
	}
	if u, g := e.jail.RootOwner(); u != uid || g != gid {
		t.Errorf("RootOwner %d:%d, want the gateway's %d:%d", u, g, uid, gid)
	}

	src := t.TempDir()
	writeJailTestFiles(t, src)
	out, err := e.rsync(t, true, "-a", src+"/", "x:dst/")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	sameTree(t, treeOf(t, src), treeOf(t, filepath.Join(e.root, "dst")))
	info, err := os.Lstat(filepath.Join(e.root, "dst", "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if st := info.Sys().(*syscall.Stat_t); st.Uid != uid {
		t.Errorf("pushed file owned by %d, want the gateway's uid %d", st.Uid, uid)
	}

	back := t.TempDir()
	if out, err := e.rsync(t, false, "-a", "x:dst/", back+"/"); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	sameTree(t, treeOf(t, src), treeOf(t, back))

	before := treeOf(t, e.root)
	out, err = e.rsync(t, false, "-a", src+"/", "x:ro/")
	if err == nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("push to a read-only root: %v\n%s", err, out)
	}
	sameTree(t, before, treeOf(t, e.root))

	dst := t.TempDir()
	if out, err := e.rsync(t, false, "-a", "x:/etc/passwd", dst+"/"); err == nil {
		t.Errorf("pull of /etc/passwd succeeded:\n%s", out)
	}

	// The exec'd rsync is uid 0 of its namespace only, and holds no capability in it.
	cmd, _ := startIdleJail(t, e, true)
	status := procStatus(t, cmd.Process.Pid)
	checkPowerless(t, status)
	if !strings.HasPrefix(status["Uid"], strconv.Itoa(int(uid))+" ") {
		t.Errorf("Uid %q, want the gateway's %d on the host", status["Uid"], uid)
	}
	pidNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", cmd.Process.Pid))
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, 2*time.Second, "the jail's processes to end", func() bool {
		return len(jailProcesses(t, ^uint32(0), pidNS)) == 0
	})
}
