package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// JailDataDir is where the token's root appears inside the jail; rsync starts with it as cwd.
const JailDataDir = "/data"

// The jail child is this binary re-executed with these two arguments. The flag form makes
// a binary whose main forgot to call RunJailChild fail at once on an unknown flag instead
// of running as something else.
const (
	jailChildArg0 = "tokengate-jail"
	jailChildFlag = "-tokengate-jail-child"
)

// jailSetupFailed is the exit status of a jail child that refused to run rsync.
const jailSetupFailed = 126

// Defaults for the limits of JailConfig left at zero. RLIMIT_NPROC counts every process of
// the jail uid on the host, not per session, so it must cover all concurrent sessions: a
// push runs two rsync processes, a pull one.
const (
	defaultJailMaxProcs     = 512
	defaultJailMaxOpenFiles = 256
)

// minRsyncVersion is the oldest rsync we run as a server: older ones have server-side
// memory-safety and path-escape bugs that a client can trigger.
var minRsyncVersion = rsyncVersion{major: 3, minor: 4}

// jailEnv is the whole environment rsync gets. Nothing from the client or from the gateway
// process reaches it: the gateway's own environment may hold secrets (a Redis password).
// HOME must stay outside the token's root: rsync --server reads $HOME/.popt, whose aliases
// can add options to its command line and even run programs; / of the jail holds none.
var jailEnv = []string{"PATH=/usr/bin:/bin", "HOME=/", "LC_ALL=C"}

// JailConfig is what the jail needs to know about the host, set once at start-up.
type JailConfig struct {
	RsyncPath    string // host path of the rsync binary
	StateDir     string // the gateway's state dir (exists, 0700); holds the jail scaffold
	UID, GID     uint32 // unprivileged ids rsync runs as (root mode; see jailModeUserNS)
	MaxProcs     uint64 // RLIMIT_NPROC for the jailed uid; 0 = defaultJailMaxProcs
	MaxOpenFiles uint64 // RLIMIT_NOFILE; 0 = defaultJailMaxOpenFiles
	MaxFileSize  uint64 // RLIMIT_FSIZE in bytes; 0 = unlimited
	Insecure     bool   // run rsync directly, cwd = root, no confinement (development only)
}

// Spec is one session's request to the jail. It carries no secret, and must not: it is
// handed to the jail child in a file the child can read.
type Spec struct {
	Root      string   // absolute host path of the token's root (exists, no symlinks)
	Writable  bool     // false: the root is bind-mounted read-only
	Argv      []string // "rsync", "--server", ...; paths relative to JailDataDir or under it
	SessionID string   // for logs only
}

// jailMode says how the jail is built on this host.
type jailMode string

const (
	jailModeRoot     jailMode = "root"     // the gateway is root: namespaces and setuid directly
	jailModeUserNS   jailMode = "userns"   // non-root: rsync runs as the gateway's own uid
	jailModeInsecure jailMode = "insecure" // --insecure-no-jail: no confinement at all
)

// Jail runs rsync --server confined to one token's root. It is safe for concurrent use.
type Jail struct {
	cfg      JailConfig
	mode     jailMode
	rsync    string     // absolute host path of rsync; also its path inside the jail
	version  string     // as printed by rsync --version, for logs
	files    []jailFile // rsync, its ELF interpreter and libraries, host path -> jail path
	libDirs  []string   // jail dirs holding the libraries, in search order
	scaffold string     // <StateDir>/jail, the empty dir each child mounts its tmpfs on
	hostUID  int        // the gateway's uid, mapped to root in userns mode
	hostGID  int        // the gateway's gid, mapped likewise
}

// jailPlan is everything the jail child needs for one session. It reaches the child in an
// inherited memfd, never argv or the environment, and holds no secret.
type jailPlan struct {
	Mode         jailMode   `json:"mode"`
	Root         string     `json:"root"`     // host path of the token's root
	Writable     bool       `json:"writable"` // false: /data is read-only
	Scaffold     string     `json:"scaffold"` // host dir the child covers with its tmpfs
	Rsync        string     `json:"rsync"`    // path of rsync inside the jail
	Argv         []string   `json:"argv"`
	Env          []string   `json:"env"`
	Files        []jailFile `json:"files"`
	UID          uint32     `json:"uid"`
	GID          uint32     `json:"gid"`
	MaxProcs     uint64     `json:"max_procs"`
	MaxOpenFiles uint64     `json:"max_open_files"`
	MaxFileSize  uint64     `json:"max_file_size"`
}

// jailFile is one host file bind-mounted read-only into the jail.
type jailFile struct {
	Host string `json:"host"`
	Jail string `json:"jail"`
}

// NewJail checks once, at start-up, everything a session's jail will need: an rsync that is
// new enough, the libraries it loads, and that this host lets us build the namespaces. It
// ends with a self-test that runs `rsync --version` inside a real jail, so a gateway that
// starts is a gateway whose jail works.
func NewJail(cfg JailConfig) (*Jail, error) {
	// A binary that forgot the RunJailChild hook would otherwise build a jail from within
	// its own jail child, and that child another, until the kernel's nesting limit.
	if len(os.Args) > 0 && os.Args[0] == jailChildArg0 {
		return nil, errors.New("tokengate: jail: NewJail called in a jail child: main must " +
			"call session.RunJailChild first thing when session.IsJailChild")
	}

	j := &Jail{cfg: cfg, hostUID: os.Getuid(), hostGID: os.Getgid()}
	if j.cfg.MaxProcs == 0 {
		j.cfg.MaxProcs = defaultJailMaxProcs
	}
	if j.cfg.MaxOpenFiles == 0 {
		j.cfg.MaxOpenFiles = defaultJailMaxOpenFiles
	}

	rsync, err := findRsync(cfg.RsyncPath)
	if err != nil {
		return nil, err
	}
	j.rsync = rsync

	version, err := checkRsyncVersion(rsync)
	if err != nil {
		return nil, err
	}
	j.version = version

	if cfg.Insecure {
		j.mode = jailModeInsecure
		return j, nil
	}

	j.mode, err = chooseJailMode()
	if err != nil {
		return nil, err
	}
	if j.mode == jailModeRoot && (cfg.UID == 0 || cfg.GID == 0) {
		return nil, errors.New("tokengate: jail: config: UID and GID must be non-zero: " +
			"rsync must not run as root")
	}

	j.files, j.libDirs, err = jailFiles(rsync)
	if err != nil {
		return nil, err
	}

	j.scaffold, err = makeScaffold(cfg.StateDir)
	if err != nil {
		return nil, err
	}

	if err := j.selfTest(); err != nil {
		return nil, err
	}
	return j, nil
}

// Mode names how sessions are confined ("root", "userns" or "insecure"), for logs.
func (j *Jail) Mode() string { return string(j.mode) }

// RootOwner is the uid and gid that files written by the jailed rsync get on the host, and
// so the owner PrepareRoot should give the dirs it creates: the jail uid in root mode, but
// the gateway's own ids in userns and insecure mode, where rsync runs as the gateway.
func (j *Jail) RootOwner() (uid, gid uint32) {
	if j.mode == jailModeRoot {
		return j.cfg.UID, j.cfg.GID
	}
	return uint32(j.hostUID), uint32(j.hostGID)
}

// RsyncVersion is the first line of `rsync --version`, for logs.
func (j *Jail) RsyncVersion() string { return j.version }

// Command returns a not-yet-started command that runs spec.Argv as the rsync server in a
// fresh jail. The caller sets Stdin/Stdout/Stderr, then calls Start and Wait. The process
// is PID 1 of its own PID namespace, so killing cmd.Process kills every process of the
// session. The command holds one inherited file (the session plan, in cmd.ExtraFiles); the
// caller may close it after Start, otherwise it is closed when cmd is garbage collected.
func (j *Jail) Command(spec Spec) (*exec.Cmd, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if j.mode == jailModeInsecure {
		return j.insecureCommand(spec), nil
	}

	// Refuse a root reached through a symlink here, for a clear error to the caller; the
	// child checks again when it opens the root, and that check is the one that counts.
	if err := checkRootPath(spec.Root); err != nil {
		return nil, err
	}

	argv := spec.Argv
	if j.mode == jailModeUserNS {
		// rsync runs as uid 0 of its user namespace, so it would believe it is root and try
		// to chown received files to the client's ids, which are not mapped: every push
		// with -a would end in errors. --no-super makes the receiver act as a normal user.
		argv = append([]string{argv[0], argv[1], "--no-super"}, argv[2:]...)
	}
	return j.jailCommand(spec.Root, spec.Writable, argv)
}

// jailCommand builds the re-exec of this binary as the jail child, for any argv.
func (j *Jail) jailCommand(root string, writable bool, argv []string) (*exec.Cmd, error) {
	plan := jailPlan{
		Mode:         j.mode,
		Root:         root,
		Writable:     writable,
		Scaffold:     j.scaffold,
		Rsync:        j.rsync,
		Argv:         argv,
		Env:          j.env(),
		Files:        j.files,
		UID:          j.cfg.UID,
		GID:          j.cfg.GID,
		MaxProcs:     j.cfg.MaxProcs,
		MaxOpenFiles: j.cfg.MaxOpenFiles,
		MaxFileSize:  j.cfg.MaxFileSize,
	}
	planFile, err := writePlanFile(plan)
	if err != nil {
		return nil, err
	}

	// /proc/self/exe is this very binary even if the file on disk was replaced by an
	// upgrade, so parent and child always agree on the plan format.
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{jailChildArg0, jailChildFlag},
		Env:         []string{},
		Dir:         "/",
		ExtraFiles:  []*os.File{planFile},
		SysProcAttr: j.childSysProcAttr(),
	}
	return cmd, nil
}

// env is rsync's fixed environment. The jail has no ld.so.cache, and the loader's built-in
// search dirs differ between distributions, so the library dirs we built are named here.
func (j *Jail) env() []string {
	env := append([]string{}, jailEnv...)
	if len(j.libDirs) > 0 {
		env = append(env, "LD_LIBRARY_PATH="+strings.Join(j.libDirs, ":"))
	}
	return env
}

// insecureCommand runs rsync directly in the token's root. Paths the client gave under
// JailDataDir are rewritten to the same place under the root, so the argv policy stays
// the same in both modes; nothing stops rsync from leaving the root, which is the point
// of calling this mode insecure.
func (j *Jail) insecureCommand(spec Spec) *exec.Cmd {
	argv := make([]string, len(spec.Argv))
	for i, arg := range spec.Argv {
		argv[i] = rewriteDataPath(arg, spec.Root)
	}
	cmd := exec.Command(j.rsync)
	cmd.Args = argv
	cmd.Dir = spec.Root
	cmd.Env = append([]string{}, jailEnv...)
	cmd.SysProcAttr = insecureSysProcAttr()
	return cmd
}

// rewriteDataPath maps /data and /data/... (alone or as the value of --opt=...) to root.
func rewriteDataPath(arg, root string) string {
	prefix := ""
	value := arg
	if strings.HasPrefix(arg, "--") {
		name, v, ok := strings.Cut(arg, "=")
		if !ok {
			return arg
		}
		prefix, value = name+"=", v
	}
	if value == JailDataDir {
		return prefix + root
	}
	if rest, ok := strings.CutPrefix(value, JailDataDir+"/"); ok {
		return prefix + root + "/" + rest // keeps a trailing slash, which rsync reads
	}
	return arg
}

// checkSpec refuses specs the jail cannot run safely, whatever the policy said.
func checkSpec(spec Spec) error {
	if !filepath.IsAbs(spec.Root) || filepath.Clean(spec.Root) != spec.Root {
		return errors.New("tokengate: jail: spec: root must be an absolute clean path")
	}
	if len(spec.Argv) < 2 || spec.Argv[0] != "rsync" || spec.Argv[1] != "--server" {
		return errors.New("tokengate: jail: spec: argv must start with rsync --server")
	}
	for _, arg := range spec.Argv {
		if strings.IndexByte(arg, 0) >= 0 {
			return errors.New("tokengate: jail: spec: argv holds a NUL byte")
		}
	}
	return nil
}

// findRsync returns the absolute path of the configured rsync, which must be a regular
// executable file.
func findRsync(path string) (string, error) {
	if path == "" {
		path = "rsync"
	}
	if !strings.Contains(path, "/") {
		found, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("tokengate: jail: rsync: %w", err)
		}
		path = found
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("tokengate: jail: rsync: %w", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("tokengate: jail: rsync: %w", err)
	}
	if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("tokengate: jail: rsync: %s is not an executable file", path)
	}
	return path, nil
}

// checkRsyncVersion runs `rsync --version` on the host, at start-up only, and refuses a
// version older than minRsyncVersion.
func checkRsyncVersion(rsync string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rsync, "--version")
	cmd.Env = append([]string{}, jailEnv...)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("tokengate: jail: rsync --version: %w", err)
	}
	first, _, _ := bytes.Cut(out, []byte("\n"))
	line := strings.TrimSpace(string(first))
	version, err := parseRsyncVersion(line)
	if err != nil {
		return "", err
	}
	if version.less(minRsyncVersion) {
		return "", fmt.Errorf("tokengate: jail: rsync version: %s is %s, need %s or "+
			"newer: older rsync servers have known remote vulnerabilities",
			rsync, version, minRsyncVersion)
	}
	return line, nil
}

// selfTest runs `rsync --version` through the whole jail once, with the empty scaffold dir
// as a read-only root, and checks what it printed.
func (j *Jail) selfTest() error {
	cmd, err := j.jailCommand(j.scaffold, false, []string{"rsync", "--version"})
	if err != nil {
		return err
	}
	defer closeExtraFiles(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	if err := cmd.Start(); err != nil {
		// The kernel refused the clone: no namespaces for us on this host.
		why := "this host refuses to create the namespaces"
		if j.mode == jailModeUserNS {
			why = "the gateway is not root and this kernel refuses it a user namespace"
		}
		return fmt.Errorf("tokengate: jail: self-test: %s (%w); run as root or allow "+
			"unprivileged user namespaces; --insecure-no-jail exists for development only",
			why, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		err = errors.New("timed out after 30s")
	}

	line, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
	first, _, _ := strings.Cut(stdout.String(), "\n")
	_, versionErr := parseRsyncVersion(first)
	switch {
	case err != nil && strings.HasPrefix(line, "tokengate: jail: "):
		return fmt.Errorf("tokengate: jail: self-test in %s mode: %s", j.mode,
			strings.TrimPrefix(line, "tokengate: jail: "))
	case err != nil:
		return fmt.Errorf("tokengate: jail: self-test in %s mode: %w (%q); does main call "+
			"session.RunJailChild first thing when session.IsJailChild?", j.mode, err, line)
	case versionErr != nil:
		return fmt.Errorf("tokengate: jail: self-test in %s mode: unexpected output %q",
			j.mode, first)
	}
	return nil
}

// closeExtraFiles releases the parent's copies of the files a command passed to its child.
func closeExtraFiles(cmd *exec.Cmd) {
	for _, f := range cmd.ExtraFiles {
		if f != nil {
			_ = f.Close()
		}
	}
}

// makeScaffold creates <stateDir>/jail, the empty dir that each jail child covers with its
// own tmpfs inside its own mount namespace: sessions never share or leave anything there.
func makeScaffold(stateDir string) (string, error) {
	if !filepath.IsAbs(stateDir) {
		return "", errors.New("tokengate: jail: state dir: must be an absolute path")
	}
	stateDir, err := filepath.EvalSymlinks(stateDir)
	if err != nil {
		return "", fmt.Errorf("tokengate: jail: state dir: %w", err)
	}
	dir := filepath.Join(stateDir, "jail")
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("tokengate: jail: scaffold: %w", err)
	}
	info, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("tokengate: jail: scaffold: %w", err)
	}
	if !info.IsDir() {
		return "", fmt.Errorf("tokengate: jail: scaffold: %s is not a directory", dir)
	}
	return dir, nil
}
