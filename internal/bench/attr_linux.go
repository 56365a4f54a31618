package bench

import "syscall"

// childAttr makes the kernel kill a child when the benchmark dies, so no
// target outlives an interrupted run.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
