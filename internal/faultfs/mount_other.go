//go:build !linux

package faultfs

import "errors"

var errNotLinux = errors.New("mounts for fault tests are Linux-only")

func mountTmpfs(string, int64) error { return errNotLinux }
func bindReadOnly(string) error      { return errNotLinux }
func unmount(string) error           { return errNotLinux }
