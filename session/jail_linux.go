package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// jailCloneflags are the namespaces every session gets. Mount: its own tree holding only
// rsync, its libraries and the root. PID: rsync is PID 1, it sees no other process, and
// killing it kills the whole session. IPC and UTS: no shared SysV objects or hostname.
// Network: no interface but a down loopback, since rsync --server only talks over its
// stdin and stdout. Cgroup: no view of the host's cgroup paths.
const jailCloneflags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUTS | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// chooseJailMode picks root mode when the gateway is root, else an unprivileged user
// namespace if the kernel offers them. The self-test in NewJail is the real check: these
// tests only turn the common refusals into a clear message early.
func chooseJailMode() (jailMode, error) {
	if os.Geteuid() == 0 {
		return jailModeRoot, nil
	}
	refuse := func(why string) (jailMode, error) {
		return "", fmt.Errorf("tokengate: jail: namespaces: the gateway is not root and %s; "+
			"run it as root, or enable unprivileged user namespaces; "+
			"--insecure-no-jail exists for development only", why)
	}
	if v, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil &&
		strings.TrimSpace(string(v)) == "0" {
		return refuse("user.max_user_namespaces is 0")
	}
	if v, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil &&
		strings.TrimSpace(string(v)) == "0" {
		return refuse("kernel.unprivileged_userns_clone is 0")
	}
	return jailModeUserNS, nil
}

// childSysProcAttr starts the jail child in its new namespaces. Setsid detaches it from
// any terminal and from the gateway's process group. Pdeathsig kills it if the gateway
// dies; the kernel sends it when the forking thread exits, so Start must not be called
// from a goroutine that locked its thread and exits. In userns mode the gateway's uid and
// gid become root inside, the only ids an unprivileged process may map, and setgroups is
// denied as the kernel requires for such a map.
func (j *Jail) childSysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Cloneflags: jailCloneflags,
		Setsid:     true,
		Pdeathsig:  syscall.SIGKILL,
	}
	if j.mode == jailModeUserNS {
		attr.Cloneflags |= unix.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: j.hostUID, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: j.hostGID, Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	return attr
}

// insecureSysProcAttr still makes rsync die with the gateway.
func insecureSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// writePlanFile puts the plan in a sealed memfd: the child reads it from its fd 3, and
// nobody, the parent included, can change it after the seals are set.
func writePlanFile(plan jailPlan) (*os.File, error) {
	data, err := json.Marshal(plan)
	if err != nil {
		return nil, fmt.Errorf("tokengate: jail: plan: %w", err)
	}
	fd, err := unix.MemfdCreate("tokengate-jail-plan", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("tokengate: jail: plan: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tokengate-jail-plan")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("tokengate: jail: plan: write: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("tokengate: jail: plan: seal: %w", err)
	}
	return f, nil
}

// openRootNoSymlinks opens root as an O_PATH handle, refusing symlinks on every component.
func openRootNoSymlinks(root string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, root, &how)
	if errors.Is(err, unix.ELOOP) {
		return -1, errors.New("a component is a symlink")
	}
	return fd, err
}
