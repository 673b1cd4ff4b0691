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

// Close codes: rules.TestCloseCodes.

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
