// Package rules holds the syntax rules that several parts of Switchboard
// must agree on: which close codes and reasons may be sent, which strings may
// be a NATS subject token, a subject prefix, a user or group name, a node ID
// or a Redis key prefix. Each rule is defined here once, so that the API, the
// edge, the cluster, groups, the lifecycle and the backend SDK cannot drift
// apart. It imports nothing of the project.
package rules

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxCloseReason is the longest close reason in bytes: a close frame's payload
// is at most 125 bytes (RFC 6455 §5.5), two of which are the code.
const MaxCloseReason = 123

// ErrInvalidClose: a close code or reason a server may not send.
var ErrInvalidClose = errors.New("invalid close code")

// ValidCloseCode reports whether code may travel in a close frame (RFC 6455
// §7.4): 1000–1003, 1007–1014 (1012–1014 are IANA-registered) and 3000–4999
// (registered and private use). 1004 is reserved, 1005 and 1006 only stand
// for "no code" and "closed abnormally", 1015 for a TLS failure: none is ever
// sent. The same set is what a client may send, so the edge checks incoming
// close frames with it too.
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// ValidCloseReason reports whether reason fits a close frame: valid UTF-8
// (RFC 6455 §5.5.1) of at most MaxCloseReason bytes.
func ValidCloseReason(reason string) bool {
	return len(reason) <= MaxCloseReason && utf8.ValidString(reason)
}

// CheckClose returns nil if code and reason may be sent in a close frame,
// else ErrInvalidClose wrapped with what is wrong.
func CheckClose(code int, reason string) error {
	switch {
	case !ValidCloseCode(code):
		return fmt.Errorf("%w %d: a server may send 1000-1003, 1007-1014 or 3000-4999", ErrInvalidClose, code)
	case len(reason) > MaxCloseReason:
		return fmt.Errorf("%w: reason is %d bytes (max %d)", ErrInvalidClose, len(reason), MaxCloseReason)
	case !utf8.ValidString(reason):
		return fmt.Errorf("%w: reason is not valid UTF-8", ErrInvalidClose)
	}
	return nil
}

// IdentByte reports whether c is in [A-Za-z0-9_-], the characters that are
// safe everywhere: in a NATS subject token, a Redis key and hash tag, a URL
// path segment, a log line.
func IdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// Ident reports whether s is one or more bytes of [A-Za-z0-9_-]: a group
// name that needs no encoding, an encoded one.
func Ident(s string) bool {
	for i := 0; i < len(s); i++ {
		if !IdentByte(s[i]) {
			return false
		}
	}
	return s != ""
}

// ValidIdent reports whether s is 1 to max bytes of [A-Za-z0-9_-]: a node
// ID, a token of the subject prefix.
func ValidIdent(s string, max int) bool { return len(s) <= max && Ident(s) }

// MaxNodeID bounds node IDs: they appear in every Redis record and in NATS
// subjects.
const MaxNodeID = 128

// ValidNodeID reports whether s can be a node ID: 1–128 bytes of
// [A-Za-z0-9_-].
func ValidNodeID(s string) bool { return ValidIdent(s, MaxNodeID) }

// ValidToken reports whether s may be one NATS subject token: 1..max bytes of
// printable ASCII without '.', '*', '>' (subject syntax), '"' or '\' (so it
// never needs quoting in logs and configs). Whitespace, control characters
// and non-ASCII bytes (which include Unicode spaces) are refused.
func ValidToken(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// MaxName bounds user IDs, group names and route keys, in bytes.
const MaxName = 128

// ValidName reports whether s is a legal user ID or group name: a subject
// token of at most MaxName bytes. Names are checked with it before they
// become a Redis key or a subject token.
func ValidName(s string) bool { return ValidToken(s, MaxName) }

// MaxPrefixToken bounds each dot-separated token of the subject prefix.
const MaxPrefixToken = 64

// CheckSubjectPrefix returns nil if p may start every NATS subject of a
// deployment: dot-separated tokens of 1–64 bytes of [A-Za-z0-9_-]. That is
// no wildcard, no '$' (reserved for $SYS, $JS), nothing that needs escaping
// in a subject, a stream name's filter or a log line.
func CheckSubjectPrefix(p string) error {
	if p == "" {
		return fmt.Errorf("subject prefix is empty")
	}
	for _, tok := range strings.Split(p, ".") {
		if !ValidIdent(tok, MaxPrefixToken) {
			return fmt.Errorf("subject prefix %q: token %q is not 1-%d characters of [A-Za-z0-9_-]", p, tok, MaxPrefixToken)
		}
	}
	return nil
}

// CheckKeyPrefix returns nil if p may start every Redis key: [A-Za-z0-9_.:-]
// only. Braces would change the hash tags that keep multi-key scripts in one
// Redis Cluster slot.
func CheckKeyPrefix(p string) error {
	for i := 0; i < len(p); i++ {
		if c := p[i]; !IdentByte(c) && c != '.' && c != ':' {
			return fmt.Errorf("redis key prefix %q: character %q not allowed", p, c)
		}
	}
	return nil
}
