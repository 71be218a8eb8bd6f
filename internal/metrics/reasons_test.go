package metrics

import (
	"testing"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// Every close reason the event model names has its own slot: a reason
// added to tracer/event must not be counted as "unknown".
func TestEveryCloseReasonCounted(t *testing.T) {
	for r := event.CloseReason(1); r.String() != "unknown"; r++ {
		if int(r) >= nReason {
			t.Errorf("close reason %d (%s) has no slot (nReason %d)", r, r, nReason)
		}
	}
}
