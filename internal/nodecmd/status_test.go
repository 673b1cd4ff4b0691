package nodecmd

import (
	"errors"
	"fmt"
	"testing"
)

// Every conn error survives the trip owner → Sb-Status → caller, wrapped or
// not; anything else arrives as ErrRemote with its message.
func TestStatusCodecRoundTrips(t *testing.T) {
	if Status(nil) != StatusOK || StatusError(StatusOK, "") != nil {
		t.Fatal("ok does not round-trip")
	}
	seen := map[string]bool{}
	for _, s := range statuses {
		if seen[s.status] {
			t.Fatalf("status %q twice", s.status)
		}
		seen[s.status] = true
		wrapped := fmt.Errorf("hub: %w", s.err)
		st := Status(wrapped)
		if st != s.status {
			t.Errorf("Status(%v) = %q, want %q", wrapped, st, s.status)
		}
		if back := StatusError(st, "ignored"); !errors.Is(back, s.err) {
			t.Errorf("StatusError(%q) = %v, want %v", st, back, s.err)
		}
		// The owner's wording survives, and OwnerError finds it under the
		// caller's context.
		back := fmt.Errorf("id on node: %w", StatusError(st, wrapped.Error()))
		if own := OwnerError(back); own.Error() != wrapped.Error() || !errors.Is(own, s.err) {
			t.Errorf("OwnerError(%v) = %v, want %q", back, own, wrapped)
		}
	}
	other := errors.New("disk on fire")
	if st := Status(other); st != statusFailed {
		t.Fatalf("Status(other) = %q", st)
	}
	if back := StatusError(statusFailed, other.Error()); !errors.Is(back, ErrRemote) || back.Error() != "owner node failed: disk on fire" {
		t.Fatalf("StatusError(error) = %v", back)
	}
	if back := StatusError("from_a_newer_node", ""); !errors.Is(back, ErrRemote) {
		t.Fatalf("unknown status: %v", back)
	}
}
