package recent

import "unsafe"

// prefetch asks the CPU to bring the n bytes at p into its cache ahead of
// a write (prefetch_amd64.s).
//
//go:noescape
func prefetch(p unsafe.Pointer, n uintptr)
