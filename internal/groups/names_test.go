package groups

import (
	"strings"
	"testing"
)

func TestTokensAreSubjectSafeAndDistinct(t *testing.T) {
	names := []string{"room-1", "Room_1", "a{b}c", "a:b", "$SYS", "x/y", "{", "}", "=abc", "#", "~" + strings.Repeat("z", 127), strings.Repeat("a", 128)}
	seen := map[string]string{}
	for _, n := range names {
		if !ValidName(n) {
			t.Fatalf("%q should be a valid name", n)
		}
		tok := Token(n)
		if !plain(strings.TrimPrefix(tok, "=")) {
			t.Fatalf("Token(%q) = %q: not [A-Za-z0-9_-] after the marker", n, tok)
		}
		if prev, dup := seen[tok]; dup {
			t.Fatalf("%q and %q share token %q", prev, n, tok)
		}
		seen[tok] = n
	}
	if Token("room-1") != "room-1" {
		t.Fatalf("a plain name is its own token, got %q", Token("room-1"))
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", ">", "a\"b", "a\\b", "é", strings.Repeat("a", 129)} {
		if ValidName(bad) {
			t.Fatalf("%q must be refused before it becomes a subject or a key", bad)
		}
	}
}

func FuzzEnvelope(f *testing.F) {
	f.Add(encodeSend([]byte("hello"), false, "AAAAAAAAAAAAAAAA"))
	f.Add(encodeClose(4401, "bye"))
	f.Add([]byte{opText, 200})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := decodeEnvelope(b)
		if err != nil {
			return
		}
		if env.op == opText || env.op == opBinary {
			back := encodeSend(env.payload, env.op == opBinary, string(env.excluded))
			if string(back) != string(b) {
				t.Fatalf("round trip %q → %q", b, back)
			}
		}
	})
}
