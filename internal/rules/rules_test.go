package rules

import (
	"errors"
	"strings"
	"testing"
)

// RFC 6455 §7.4: which close codes may be sent in a close frame.
func TestCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code int
		ok   bool
		why  string
	}{
		{0, false, "not a close code"},
		{999, false, "below the defined range"},
		{1000, true, "normal closure"},
		{1001, true, "going away"},
		{1002, true, "protocol error"},
		{1003, true, "unsupported data"},
		{1004, false, "reserved"},
		{1005, false, "no status received: never sent"},
		{1006, false, "abnormal closure: never sent"},
		{1007, true, "invalid payload data"},
		{1008, true, "policy violation"},
		{1009, true, "message too big"},
		{1010, true, "mandatory extension"},
		{1011, true, "internal error"},
		{1012, true, "service restart (IANA)"},
		{1013, true, "try again later (IANA)"},
		{1014, true, "bad gateway (IANA)"},
		{1015, false, "TLS handshake failure: never sent"},
		{1016, false, "unassigned"},
		{2999, false, "reserved for future protocol use"},
		{3000, true, "first registered code"},
		{4000, true, "private use"},
		{4401, true, "private use (graphql-ws unauthorized)"},
		{4999, true, "last private code"},
		{5000, false, "above the range"},
		{65535, false, "above the range"},
		{-1, false, "negative"},
	} {
		if got := ValidCloseCode(tc.code); got != tc.ok {
			t.Errorf("ValidCloseCode(%d) = %v, want %v (%s)", tc.code, got, tc.ok, tc.why)
		}
	}
}

// RFC 6455 §5.5 and §5.5.1: a reason is UTF-8 and fits in 123 bytes.
func TestCloseReasons(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		ok     bool
		detail string // in CheckClose's error
	}{
		{"empty", "", true, ""},
		{"ascii", "token expired", true, ""},
		{"utf-8", "auf Wiedersehen, 再见", true, ""},
		{"123 bytes", strings.Repeat("a", 123), true, ""},
		{"124 bytes", strings.Repeat("a", 124), false, "124 bytes (max 123)"},
		{"41 three-byte runes = 123 bytes", strings.Repeat("再", 41), true, ""},
		{"invalid byte", "bye\xff", false, "not valid UTF-8"},
		{"truncated rune", "再"[:2], false, "not valid UTF-8"},
		{"surrogate half", "\xed\xa0\x80", false, "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidCloseReason(tc.reason); got != tc.ok {
				t.Fatalf("ValidCloseReason(%q) = %v, want %v", tc.reason, got, tc.ok)
			}
			err := CheckClose(1000, tc.reason)
			if tc.ok != (err == nil) {
				t.Fatalf("CheckClose(1000, %q) = %v", tc.reason, err)
			}
			if err != nil && (!errors.Is(err, ErrInvalidClose) || !strings.Contains(err.Error(), tc.detail)) {
				t.Fatalf("CheckClose error %q: want ErrInvalidClose saying %q", err, tc.detail)
			}
		})
	}
}

func TestCheckCloseNamesTheCode(t *testing.T) {
	err := CheckClose(1005, "")
	if !errors.Is(err, ErrInvalidClose) || !strings.Contains(err.Error(), "1005") || !strings.Contains(err.Error(), "3000-4999") {
		t.Fatalf("got %v", err)
	}
}

// Identifiers are [A-Za-z0-9_-]: safe in subjects, Redis hash tags and URLs.
func TestIdents(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"", false},
		{"a", true},
		{"node-1_A", true},
		{strings.Repeat("n", 128), true},
		{strings.Repeat("n", 129), false},
		{"a.b", false},
		{"a b", false},
		{"a{b}", false},
		{"a:b", false},
		{"é", false},
		{"a*", false},
	} {
		if got := ValidNodeID(tc.s); got != tc.ok {
			t.Errorf("ValidNodeID(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}

// A name (user ID, group) is one subject token: printable ASCII without
// . * > " \, 1–128 bytes.
func TestNames(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"", false},
		{"alice", true},
		{"room:42/{x}$y@z", true},
		{strings.Repeat("g", 128), true},
		{strings.Repeat("g", 129), false},
		{"a.b", false},
		{"a*", false},
		{"a>", false},
		{`a"b`, false},
		{`a\b`, false},
		{"a b", false},
		{"a\tb", false},
		{"a\x7fb", false},
		{"caf\xc3\xa9", false},
		{"\u00a0", false},
	} {
		if got := ValidName(tc.s); got != tc.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}

// The subject prefix: dot-separated tokens of 1–64 [A-Za-z0-9_-].
func TestSubjectPrefix(t *testing.T) {
	for _, tc := range []struct {
		p  string
		ok bool
	}{
		{"switchboard", true},
		{"sb.prod-eu_1", true},
		{strings.Repeat("p", 64), true},
		{strings.Repeat("p", 65), false},
		{"", false},
		{".sb", false},
		{"sb.", false},
		{"a..b", false},
		{"sb.*", false},
		{"sb.>", false},
		{"$SYS", false},
		{"s b", false},
		{"sb:1", false},
		{"sb\t", false},
	} {
		if err := CheckSubjectPrefix(tc.p); (err == nil) != tc.ok {
			t.Errorf("CheckSubjectPrefix(%q) = %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}

// A Redis key prefix: [A-Za-z0-9_.:-], no braces (hash tags).
func TestKeyPrefix(t *testing.T) {
	for _, tc := range []struct {
		p  string
		ok bool
	}{
		{"", true},
		{"switchboard", true},
		{"sb:prod.eu-1_a", true},
		{"sb{x}", false},
		{"sb }", false},
		{"sb/x", false},
	} {
		if err := CheckKeyPrefix(tc.p); (err == nil) != tc.ok {
			t.Errorf("CheckKeyPrefix(%q) = %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}
