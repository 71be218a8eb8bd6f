//go:build !linux

package relay

// canWaitReadable: elsewhere an idle connection keeps its read buffer.
const canWaitReadable = false

func (c *conn) readable(uintptr) bool { return true }

func (d *deadlineReader) rawRead(p []byte) (int, error) { return d.nc.Read(p) }
