package cluster

import (
	"errors"
	"fmt"
	"testing"
)

// Every conn error survives the trip owner → Sb-Status → router, wrapped or
// not; anything else arrives as errRemote with its message.
func TestStatusCodecRoundTrips(t *testing.T) {
	if resultLabel(nil) != statusOK || statusError(statusOK, "") != nil {
		t.Fatal("ok does not round-trip")
	}
	seen := map[string]bool{}
	for _, s := range statuses {
		if seen[s.status] {
			t.Fatalf("status %q twice", s.status)
		}
		seen[s.status] = true
		wrapped := fmt.Errorf("hub: %w", s.err)
		st := resultLabel(wrapped)
		if st != s.status {
			t.Errorf("resultLabel(%v) = %q, want %q", wrapped, st, s.status)
		}
		if back := statusError(st, "ignored"); !errors.Is(back, s.err) {
			t.Errorf("statusError(%q) = %v, want %v", st, back, s.err)
		}
	}
	other := errors.New("disk on fire")
	if st := resultLabel(other); st != statusFailed {
		t.Fatalf("resultLabel(other) = %q", st)
	}
	if back := statusError(statusFailed, other.Error()); !errors.Is(back, errRemote) || back.Error() != "owner node failed: disk on fire" {
		t.Fatalf("statusError(error) = %v", back)
	}
	if back := statusError("from_a_newer_node", ""); !errors.Is(back, errRemote) {
		t.Fatalf("unknown status: %v", back)
	}
}
