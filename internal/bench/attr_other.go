//go:build !linux

package bench

import "syscall"

// childAttr has nothing to add outside Linux (where the benchmark cannot
// read /proc anyway).
func childAttr() *syscall.SysProcAttr { return nil }
