package client

import "syscall"

// childAttrs asks the kernel to send SIGTERM to rsync when sync dies, even
// by SIGKILL, so no transfer outlives the job that started it.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
