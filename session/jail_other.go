//go:build !linux

package session

import (
	"errors"
	"os"
	"syscall"
)

// The jail needs Linux namespaces. Elsewhere only --insecure-no-jail works, so the rest of
// the package still builds and runs its tests on a developer's laptop.

var errJailNeedsLinux = errors.New("tokengate: jail: namespaces: the jail needs Linux; " +
	"--insecure-no-jail exists for development only")

func chooseJailMode() (jailMode, error) { return "", errJailNeedsLinux }

func (j *Jail) childSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

func insecureSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func writePlanFile(jailPlan) (*os.File, error) { return nil, errJailNeedsLinux }

func openRootNoSymlinks(string) (int, error) { return -1, errJailNeedsLinux }

// IsJailChild is always false where there is no jail.
func IsJailChild() bool { return false }

// RunJailChild exits: no jail child runs outside Linux.
func RunJailChild() {
	os.Stderr.WriteString("tokengate: jail: child: the jail needs Linux\n")
	os.Exit(jailSetupFailed)
}
