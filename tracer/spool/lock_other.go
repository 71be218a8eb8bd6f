//go:build !unix

package spool

import "os"

// lockDir does not lock where flock is missing: one Spool per directory is
// then the caller's duty.
func lockDir(dir string) (*os.File, error) { return nil, nil }
