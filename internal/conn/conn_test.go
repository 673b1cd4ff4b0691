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

func TestValidState(t *testing.T) {
	for s, want := range map[string]bool{
		`{}`: true, ` {"a":1}`: true, `{"principalId":"u","plan":"gold"}`: true,
		``: false, `[]`: false, `"x"`: false, `{`: false, `null`: false, `{"a":1} x`: false,
	} {
		if got := ValidState([]byte(s)); got != want {
			t.Errorf("ValidState(%q) = %v, want %v", s, got, want)
		}
	}
	if ValidState([]byte(`{"a":"` + string(make([]byte, MaxState)) + `"}`)) {
		t.Error("state over MaxState accepted")
	}
}
