package conn

import "testing"

func TestNewIDIsValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := NewID()
		if !ValidID(id) {
			t.Fatalf("NewID() = %q, not ValidID", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidIDRejectsHostileStrings(t *testing.T) {
	for _, s := range []string{"", "short", "AAAAAAAAAAAAAAA.", "AAAAAAAA>AAAAAAA", "AAAAAAAA AAAAAAA", "AAAAAAAAAAAAAAAAA", "AAAAAAAA*AAAAAAA", "AAAAAAAAAAAAAA=="} {
		if ValidID(s) {
			t.Errorf("ValidID(%q) = true", s)
		}
	}
}

func TestValidCloseCode(t *testing.T) {
	for code, want := range map[int]bool{999: false, 1000: true, 1001: true, 1004: false, 1005: false, 1006: false, 1008: true, 1011: true, 1015: false, 2999: false, 3000: true, 4401: true, 4999: true, 5000: false} {
		if got := ValidCloseCode(code); got != want {
			t.Errorf("ValidCloseCode(%d) = %v, want %v", code, got, want)
		}
	}
}
