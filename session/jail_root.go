package session

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// PrepareRoot makes sure the token root rel exists inside dataDir and returns its absolute,
// symlink-free path. Missing dirs are created 0750 and, only those, handed to uid:gid so
// the jailed rsync can write there; dirs that already exist keep their owner and mode.
//
// rel comes from token data, so it is treated as hostile: an absolute path, a ".."
// component or a symlink anywhere on the way is refused. Each component is opened with
// O_NOFOLLOW relative to the fd of its parent, so a symlink swapped in while we walk makes
// the walk fail instead of leading it out of dataDir. dataDir itself is the admin's
// configuration and may be reached through symlinks; they are resolved once here, so the
// path returned passes the jail's own no-symlink check.
func PrepareRoot(dataDir, rel string, uid, gid uint32) (string, error) {
	if !filepath.IsAbs(dataDir) {
		return "", errors.New("tokengate: jail: prepare root: data dir must be absolute")
	}
	parts, err := rootComponents(rel)
	if err != nil {
		return "", err
	}
	base, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		return "", fmt.Errorf("tokengate: jail: prepare root: data dir: %w", err)
	}

	const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	dirfd, err := unix.Open(base, dirFlags, 0)
	if err != nil {
		return "", fmt.Errorf("tokengate: jail: prepare root: data dir: %w", err)
	}
	for _, part := range parts {
		fd, err := openOrCreateDir(dirfd, part, dirFlags, uid, gid)
		unix.Close(dirfd)
		if err != nil {
			return "", fmt.Errorf("tokengate: jail: prepare root: %q: %w", rel, err)
		}
		dirfd = fd
	}
	unix.Close(dirfd)
	return filepath.Join(append([]string{base}, parts...)...), nil
}

// openOrCreateDir opens name under dirfd without following a symlink, creating it first
// if it is missing; a dir it creates is given to uid:gid through the fd it opened, so the
// chown lands on that very dir even if the name is swapped meanwhile.
func openOrCreateDir(dirfd int, name string, flags int, uid, gid uint32) (int, error) {
	created := false
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if errors.Is(err, unix.ENOENT) {
		switch err = unix.Mkdirat(dirfd, name, 0o750); {
		case err == nil:
			created = true
		case !errors.Is(err, unix.EEXIST):
			return -1, fmt.Errorf("mkdir %s: %w", name, err)
		}
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return -1, fmt.Errorf("%s is a symlink or not a directory", name)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	if !created {
		return fd, nil
	}

	// mkdirat applied the umask; the mode must be exactly 0750 whatever the gateway's is.
	if err := unix.Fchmod(fd, 0o750); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("chown %s: %w", name, err)
	}
	return fd, nil
}

// rootComponents splits a token's relative root into its names, refusing anything that
// could point outside the data dir. "" and "." mean the data dir itself.
func rootComponents(rel string) ([]string, error) {
	if strings.IndexByte(rel, 0) >= 0 {
		return nil, errors.New("tokengate: jail: prepare root: path holds a NUL byte")
	}
	if strings.HasPrefix(rel, "/") {
		return nil, fmt.Errorf("tokengate: jail: prepare root: %q is absolute", rel)
	}
	var parts []string
	for _, part := range strings.Split(rel, "/") {
		switch part {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("tokengate: jail: prepare root: %q has a .. component", rel)
		}
		parts = append(parts, part)
	}
	return parts, nil
}

// checkRootPath refuses a root reached through any symlink: a token that can write the
// parent of another token's root could otherwise swap that root for a link to /etc.
func checkRootPath(root string) error {
	fd, err := openRootNoSymlinks(root)
	if err != nil {
		return fmt.Errorf("tokengate: jail: root: must be an existing directory reached "+
			"without symlinks: %w", err)
	}
	_ = unix.Close(fd)
	return nil
}
