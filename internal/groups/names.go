package groups

import (
	"encoding/base32"
	"strings"

	"github.com/switchboardgw/switchboard/internal/rules"
)

// ValidName reports whether s may name a group or a user (rules.ValidName:
// 1–128 bytes of printable ASCII, no '.', '*', '>', '"', '\\'). Every name is
// checked with it before it becomes a subject or a key.
func ValidName(s string) bool { return rules.ValidName(s) }

// tokenEncoding turns a name with characters outside [A-Za-z0-9_-] into
// [0-9a-v]: safe in a NATS subject and inside a Redis hash tag.
var tokenEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// Token is the form of a valid name used in NATS subjects and Redis keys.
// Names of [A-Za-z0-9_-] only are their own token; any other name (with '$',
// '{', '}', ':', '/', …) is "=" followed by the lower-case base32hex of its
// bytes. '=' never occurs in a plain name, so two names never share a token.
func Token(name string) string {
	if plain(name) {
		return name
	}
	return "=" + strings.ToLower(tokenEncoding.EncodeToString([]byte(name)))
}

// plain: a name that is its own token.
func plain(s string) bool { return rules.Ident(s) }

// subjects are the NATS subjects of one deployment (one prefix).
type subjects struct {
	group, user string // "<prefix>.group." and "<prefix>.user."
	broadcast   string // "<prefix>.broadcast"
}

func newSubjects(prefix string) subjects {
	return subjects{
		group:     prefix + ".group.",
		user:      prefix + ".user.",
		broadcast: prefix + ".broadcast",
	}
}

func (s subjects) groupSubject(name string) string { return s.group + Token(name) }
func (s subjects) userSubject(name string) string  { return s.user + Token(name) }
