package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	jailPlanFD       = 3 // the plan memfd, first of cmd.ExtraFiles
	jailMaxPlanSize  = 1 << 20
	jailTmpfsOptions = "size=1m,nr_inodes=256,mode=0755"
)

// Securebits (linux/securebits.h) set before exec. NOROOT: uid 0 gains no capability by
// exec, which is what keeps rsync powerless in userns mode, where it stays uid 0 of its
// namespace. The LOCKED bits stop rsync from undoing any of it; NO_SETUID_FIXUP stays
// off and locked so a change of uid always clears capabilities.
const (
	secbitNoroot                  = 1 << 0
	secbitNorootLocked            = 1 << 1
	secbitNoSetuidFixupLocked     = 1 << 3
	secbitKeepCapsLocked          = 1 << 5
	secbitNoCapAmbientRaise       = 1 << 6
	secbitNoCapAmbientRaiseLocked = 1 << 7

	jailSecurebits = secbitNoroot | secbitNorootLocked | secbitNoSetuidFixupLocked |
		secbitKeepCapsLocked | secbitNoCapAmbientRaise | secbitNoCapAmbientRaiseLocked
)

// IsJailChild reports whether this process was started by Jail.Command as a jail child.
func IsJailChild() bool {
	return len(os.Args) == 2 && os.Args[0] == jailChildArg0 && os.Args[1] == jailChildFlag
}

// RunJailChild builds the jail described by the inherited plan and execs rsync in it. It
// never returns: when any step fails it prints one line, tokengate: jail: <step>: <error>,
// and exits non-zero without running rsync. main must call it before doing anything else.
func RunJailChild() {
	// Capabilities, no_new_privs, securebits and the parent-death signal belong to one
	// thread, and execve keeps only the calling thread's: every step runs on this one.
	runtime.LockOSThread()

	step, err := runJailChild()
	fmt.Fprintf(os.Stderr, "tokengate: jail: %s: %v\n", step, bareError(err))
	os.Exit(jailSetupFailed)
}

// bareError drops the host path that an *os.PathError carries: this
// line may reach the client, which has no business learning the host's layout, and the
// step already names the jail path concerned.
func bareError(err error) error {
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return fmt.Errorf("%s: %w", pathErr.Op, pathErr.Err)
	}
	return err
}

// runJailChild returns only on failure, with the step that failed.
func runJailChild() (string, error) {
	// Dirs made in the tmpfs must be searchable by the jail uid whatever umask the gateway
	// runs with.
	unix.Umask(0o022)

	plan, err := readPlan()
	if err != nil {
		return "read plan", err
	}
	lastCap, err := readCapLastCap()
	if err != nil {
		return "cap_last_cap", err
	}

	// The root is opened before any mount, refusing symlinks on every component, and then
	// bind-mounted through this handle: what gets mounted is the dir that was checked,
	// even if a path component is swapped after the check.
	rootFD, err := openRootNoSymlinks(plan.Root)
	if err != nil {
		return "open root", err
	}

	if step, err := buildJailTree(plan, rootFD); err != nil {
		return step, err
	}
	if err := unix.Close(rootFD); err != nil {
		return "close root", err
	}
	if step, err := enterJailTree(plan); err != nil {
		return step, err
	}

	// Any fd still open here would be a handle on the host outside the jail (a dir fd
	// allows openat(fd, "..")). Only stdin, stdout and stderr may cross the exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return "close fds", err
	}

	if step, err := dropPrivileges(plan, lastCap); err != nil {
		return step, err
	}

	err = syscall.Exec(plan.Rsync, plan.Argv, plan.Env)
	return "exec rsync", err
}

// readPlan reads and checks the plan the parent sealed in fd 3.
func readPlan() (*jailPlan, error) {
	f := os.NewFile(jailPlanFD, "tokengate-jail-plan")
	if f == nil {
		return nil, errors.New("no plan fd")
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if info.Size() <= 0 || info.Size() > jailMaxPlanSize {
		return nil, fmt.Errorf("bad size %d", info.Size())
	}
	data := make([]byte, info.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, err
	}

	var plan jailPlan
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&plan); err != nil {
		return nil, err
	}
	switch {
	case plan.Mode != jailModeRoot && plan.Mode != jailModeUserNS:
		return nil, fmt.Errorf("bad mode %q", plan.Mode)
	case plan.Mode == jailModeRoot && (plan.UID == 0 || plan.GID == 0):
		return nil, errors.New("uid and gid must be non-zero")
	case len(plan.Argv) == 0 || !isJailPath(plan.Rsync):
		return nil, errors.New("bad rsync command")
	case !filepath.IsAbs(plan.Root) || !filepath.IsAbs(plan.Scaffold):
		return nil, errors.New("root and scaffold must be absolute")
	}
	for _, file := range plan.Files {
		if !filepath.IsAbs(file.Host) || !isJailPath(file.Jail) {
			return nil, fmt.Errorf("bad file %q", file.Jail)
		}
	}
	return &plan, nil
}

// isJailPath accepts a clean absolute path that is not / and not under JailDataDir.
func isJailPath(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p && p != "/" &&
		p != JailDataDir && !strings.HasPrefix(p, JailDataDir+"/")
}

func readCapLastCap() (int, error) {
	data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("bad value %q", data)
	}
	return n, nil
}

// buildJailTree mounts the jail's tree on the scaffold, in this child's own mount
// namespace: a fresh tmpfs, rsync and its libraries read-only, the root at /data.
func buildJailTree(plan *jailPlan, rootFD int) (string, error) {
	// Private first, so that none of what follows propagates back to the host's mounts
	// (where a shared / would carry our tmpfs and binds into every other namespace).
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "private mounts", err
	}

	// The scaffold is an empty dir on the host; the tmpfs over it exists only in this
	// namespace and goes away with it, so sessions never see each other's tree and
	// nothing is left on the host. nosuid, nodev and noexec: its only files are mount
	// points, and the binds on them carry their own flags.
	tmpfsFlags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("tokengate-jail", plan.Scaffold, "tmpfs", tmpfsFlags,
		jailTmpfsOptions); err != nil {
		return "mount tmpfs", err
	}

	// rsync, its interpreter and libraries, one file each, read-only and nosuid, at the
	// paths the loader asks for. Nothing else of the host: no /etc, no /proc, no /dev.
	for _, file := range plan.Files {
		target := filepath.Join(plan.Scaffold, file.Jail)
		if err := bindFile(file.Host, target); err != nil {
			return "bind " + file.Jail, err
		}
	}

	// The token's root. nosuid and nodev because clients write there; noexec because
	// nothing in the jail runs a file of the root. Read-only through the mount, not only
	// through the policy: a read-only token's rsync gets EROFS from the kernel even if the
	// argv policy were bypassed. The bind is not recursive, so a mount below the root on
	// the host cannot slip in with other flags.
	data := filepath.Join(plan.Scaffold, JailDataDir)
	if err := os.Mkdir(data, 0o755); err != nil {
		return "mkdir " + JailDataDir, err
	}
	source := "/proc/self/fd/" + strconv.Itoa(rootFD)
	if err := unix.Mount(source, data, "", unix.MS_BIND, ""); err != nil {
		return "bind " + JailDataDir, err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !plan.Writable {
		flags |= unix.MS_RDONLY
	}
	if err := remountBind(data, flags); err != nil {
		return "remount " + JailDataDir, err
	}

	// Sealing the tmpfs: rsync cannot create anything outside /data, not even in /.
	sealFlags := uintptr(unix.MS_REMOUNT|unix.MS_RDONLY) | tmpfsFlags
	if err := unix.Mount("", plan.Scaffold, "", sealFlags, ""); err != nil {
		return "seal tmpfs", err
	}
	if err := requireMountFlags(plan.Scaffold, unix.ST_RDONLY); err != nil {
		return "seal tmpfs", err
	}
	return "", nil
}

// bindFile bind-mounts one host file read-only and nosuid onto a new empty file.
func bindFile(host, target string) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount(host, target, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	return remountBind(target, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV)
}

// remountBind sets flags on a bind mount and checks that the kernel applied them. A bind
// remount replaces all the mount's flags, and in a user namespace the kernel refuses to
// clear the ones the source mount had (they are locked), so those are kept.
func remountBind(target string, flags uintptr) error {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return err
	}
	keep := []struct {
		st int64
		ms uintptr
	}{
		{unix.ST_RDONLY, unix.MS_RDONLY},
		{unix.ST_NOSUID, unix.MS_NOSUID},
		{unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
	}
	want := int64(0)
	for _, k := range keep {
		if st.Flags&k.st != 0 {
			flags |= k.ms
		}
		if flags&k.ms != 0 && k.ms&(unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|
			unix.MS_NOEXEC) != 0 {
			want |= k.st
		}
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		return err
	}
	return requireMountFlags(target, want)
}

// requireMountFlags fails unless the mount at path has every ST_* flag in want.
func requireMountFlags(path string, want int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return err
	}
	if st.Flags&want != want {
		return fmt.Errorf("mount flags %#x lack %#x", st.Flags, want&^st.Flags)
	}
	return nil
}

// enterJailTree makes the tmpfs the root of this mount namespace and drops the host's.
// pivot_root, unlike chroot, leaves no path back: once the old root is detached, no
// mount of the host exists in this namespace at all.
func enterJailTree(plan *jailPlan) (string, error) {
	if err := unix.Chdir(plan.Scaffold); err != nil {
		return "chdir scaffold", err
	}
	// With new_root and put_old both ".", the old root ends up mounted over the new one,
	// so no put_old dir has to exist in the (read-only) tmpfs.
	if err := unix.PivotRoot(".", "."); err != nil {
		return "pivot_root", err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return "detach old root", err
	}
	if err := unix.Chdir(JailDataDir); err != nil {
		return "chdir " + JailDataDir, err
	}

	// The new / must hold exactly the dirs the plan put there.
	allowed := map[string]bool{strings.TrimPrefix(JailDataDir, "/"): true}
	for _, file := range plan.Files {
		top, _, _ := strings.Cut(strings.TrimPrefix(file.Jail, "/"), "/")
		allowed[top] = true
	}
	entries, err := os.ReadDir("/")
	if err != nil {
		return "check root", err
	}
	for _, e := range entries {
		if !allowed[e.Name()] {
			return "check root", fmt.Errorf("unexpected /%s", e.Name())
		}
	}
	return "", nil
}

// dropPrivileges leaves this thread with the jail uid, no capability of any kind, and
// no way to gain one, so that the exec'd rsync runs with nothing but DAC on /data.
func dropPrivileges(plan *jailPlan, lastCap int) (string, error) {
	// Limits first, while we may still lower hard limits: the uid change would otherwise
	// not stop rsync from raising its soft limits back. No core dumps: a core of rsync
	// would hold file data and would be written in /data.
	if err := setLimits(plan); err != nil {
		return "rlimits", err
	}

	// The bounding set caps what any later exec may grant; it and the securebits need
	// CAP_SETPCAP, so they go before the uid change.
	for c := 0; c <= lastCap; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return "drop bounding set", fmt.Errorf("capability %d: %w", c, err)
		}
	}
	err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	if err != nil {
		return "clear ambient capabilities", err
	}
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, jailSecurebits, 0, 0, 0); err != nil {
		return "securebits", err
	}

	// In root mode, the jail uid: no supplementary group of the gateway survives, and
	// real, effective and saved ids all change, so there is no way back to root. In
	// userns mode the only mapped id is 0 and setgroups is denied by the kernel, so rsync
	// stays uid 0 of its namespace, which maps to the gateway's own uid on the host, and
	// is stripped of capabilities below instead.
	if plan.Mode == jailModeRoot {
		if step, err := setJailIDs(plan.UID, plan.GID); err != nil {
			return step, err
		}
	}

	// Empty effective, permitted and inheritable sets; with the bounding and ambient sets
	// empty too, execve has no capability it could hand to rsync.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		return "capset", err
	}
	if err := checkNoCapabilities(lastCap); err != nil {
		return "check capabilities", err
	}

	// no_new_privs: no setuid or file-capability binary could ever raise privileges again.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return "no_new_privs", err
	}
	if v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); err != nil || v != 1 {
		return "no_new_privs", fmt.Errorf("not set (%d, %v)", v, err)
	}

	// The kernel clears the parent-death signal when credentials change; set it again so
	// rsync dies with the gateway.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return "pdeathsig", err
	}
	return "", nil
}

func setLimits(plan *jailPlan) error {
	limits := []struct {
		resource int
		value    uint64
	}{
		{unix.RLIMIT_CORE, 0},
		{unix.RLIMIT_NPROC, plan.MaxProcs},
		{unix.RLIMIT_NOFILE, plan.MaxOpenFiles},
	}
	if plan.MaxFileSize > 0 {
		limits = append(limits, struct {
			resource int
			value    uint64
		}{unix.RLIMIT_FSIZE, plan.MaxFileSize})
	}
	for _, l := range limits {
		// syscall.Setrlimit, not unix: for RLIMIT_NOFILE it also stops syscall.Exec from
		// restoring the soft limit the Go runtime found at start-up.
		want := syscall.Rlimit{Cur: l.value, Max: l.value}
		if err := syscall.Setrlimit(l.resource, &want); err != nil {
			return fmt.Errorf("resource %d: %w", l.resource, err)
		}
		var got syscall.Rlimit
		if err := syscall.Getrlimit(l.resource, &got); err != nil || got != want {
			return fmt.Errorf("resource %d: not applied (%v)", l.resource, err)
		}
	}
	return nil
}

// setJailIDs drops to the jail uid and gid; the syscall package applies each change to
// every thread of the process.
func setJailIDs(uid, gid uint32) (string, error) {
	if err := syscall.Setgroups([]int{}); err != nil {
		return "setgroups", err
	}
	if err := syscall.Setresgid(int(gid), int(gid), int(gid)); err != nil {
		return "setgid", err
	}
	if err := syscall.Setresuid(int(uid), int(uid), int(uid)); err != nil {
		return "setuid", err
	}

	r, e, s := unix.Getresuid()
	if r != int(uid) || e != int(uid) || s != int(uid) {
		return "setuid", fmt.Errorf("uids are %d/%d/%d, want %d", r, e, s, uid)
	}
	rg, eg, sg := unix.Getresgid()
	if rg != int(gid) || eg != int(gid) || sg != int(gid) {
		return "setgid", fmt.Errorf("gids are %d/%d/%d, want %d", rg, eg, sg, gid)
	}
	if groups, err := unix.Getgroups(); err != nil || len(groups) != 0 {
		return "setgroups", fmt.Errorf("groups %v remain (%v)", groups, err)
	}
	return "", nil
}

// checkNoCapabilities verifies every capability set of this thread is empty.
func checkNoCapabilities(lastCap int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return err
	}
	for _, c := range caps {
		if c.Effective != 0 || c.Permitted != 0 || c.Inheritable != 0 {
			return fmt.Errorf("capabilities remain: %+v", caps)
		}
	}
	for c := 0; c <= lastCap; c++ {
		in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
		if err != nil || in != 0 {
			return fmt.Errorf("capability %d still in the bounding set (%v)", c, err)
		}
		amb, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET,
			uintptr(c), 0, 0)
		if err != nil || amb != 0 {
			return fmt.Errorf("capability %d still ambient (%v)", c, err)
		}
	}
	bits, err := unix.PrctlRetInt(unix.PR_GET_SECUREBITS, 0, 0, 0, 0)
	if err != nil || bits&jailSecurebits != jailSecurebits {
		return fmt.Errorf("securebits %#x, want %#x (%v)", bits, jailSecurebits, err)
	}
	return nil
}
