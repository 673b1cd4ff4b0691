// Package authn authenticates a client at $connect: a JWT (HS256, RS256 or
// ES256) read from a header, a query parameter or Sec-WebSocket-Protocol,
// checked against keys from a PEM/secret file or a JWKS file, turned into a
// user ID and a principal. It decides locally, before any backend is asked,
// so a forged or expired token costs one signature check and nothing else.
package authn

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/switchboardgw/switchboard/internal/flagext"
)

// Algorithms the authorizer knows. Each is only ever checked with a key of
// its own type (HMAC secret, RSA or P-256 public key), so a public key can
// never be used as an HMAC secret and "none" is never accepted.
const (
	HS256 = "HS256"
	RS256 = "RS256"
	ES256 = "ES256"
)

// The defaults: what a zero field means and what the flags default to.
const (
	DefaultHeader    = "Authorization"
	DefaultUserClaim = "sub"
	DefaultLeeway    = 30 * time.Second
)

// Config configures a JWT authorizer. The zero value of every field is its
// default; KeysFile or JWKSFile is required.
type Config struct {
	// KeysFile holds PEM public keys (PUBLIC KEY, RSA PUBLIC KEY or
	// CERTIFICATE blocks) or, when it holds no PEM block, an HMAC secret of at
	// least 32 bytes (one trailing newline is ignored). Re-read when it
	// changes. Default: none.
	KeysFile string
	// JWKSFile holds a JSON Web Key Set (RSA, EC P-256 and "oct" keys; "kid"
	// and "alg" honoured). Re-read when it changes. Default: none.
	JWKSFile string
	// Algorithms accepted. Default: HS256, RS256, ES256.
	Algorithms []string
	// Header carrying the token. For Authorization the "Bearer" scheme is
	// required; for another header the value is the token (a "Bearer "
	// prefix is stripped). Default: "Authorization".
	Header string
	// Query is the query parameter carrying the token (e.g. "token").
	// Default: "" (not read).
	Query string
	// SubprotocolPrefix marks the Sec-WebSocket-Protocol entry carrying the
	// token: the entry "<prefix><token>". Browsers cannot set headers, but
	// can offer subprotocols. Default: "" (not read).
	SubprotocolPrefix string
	// Audience: when set, "aud" must contain one of these. Default: not checked.
	Audience []string
	// Issuer: when set, "iss" must equal it. Default: not checked.
	Issuer string
	// UserClaim is the claim (a string) that becomes the user ID. Default: "sub".
	UserClaim string
	// Leeway tolerated on exp and nbf for clock skew. Default: 30s; negative
	// means none.
	Leeway time.Duration
	// AllowNoExp accepts tokens without "exp". Default: false (exp required,
	// so a leaked token does not work forever).
	AllowNoExp bool
	// MaxTokenBytes: longer tokens are refused before any parsing.
	// Default: 8192.
	MaxTokenBytes int
	// MaxPrincipalBytes bounds the principal (the claims, as JSON) that rides
	// on every event of the connection. Default: 8192.
	MaxPrincipalBytes int
	// ReloadInterval: how often the key files' size and mtime are checked.
	// Default: 5s.
	ReloadInterval time.Duration
	// ValidUserID reports whether a user claim is acceptable as a user ID
	// (the node passes rules.ValidName). Default: 1..256 bytes of
	// printable ASCII.
	ValidUserID func(string) bool
}

// RegisterFlags binds the fields an operator sets to flags, each with the
// default a zero field has. ValidUserID is the caller's.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.KeysFile, "jwt-keys-file", "", "PEM public key(s) or HMAC secret file for the built-in $connect JWT authorizer (re-read on change)")
	f.StringVar(&c.JWKSFile, "jwt-jwks-file", "", "JWKS file for the JWT authorizer (re-read on change)")
	flagext.StringListVar(f, &c.Algorithms, "jwt-algorithms", "accepted JWT algorithms (default: HS256,RS256,ES256 as the keys allow)")
	f.StringVar(&c.Header, "jwt-header", DefaultHeader, "header carrying the token (Bearer scheme for Authorization)")
	f.StringVar(&c.Query, "jwt-query", "", "query parameter carrying the token (e.g. token; empty: off)")
	f.StringVar(&c.SubprotocolPrefix, "jwt-subprotocol-prefix", "", "Sec-WebSocket-Protocol entry prefix carrying the token (empty: off)")
	// One audience on the command line; the library takes several.
	f.Func("jwt-audience", "required aud claim (empty: not checked)", func(s string) error {
		c.Audience = nil
		if s != "" {
			c.Audience = []string{s}
		}
		return nil
	})
	f.StringVar(&c.Issuer, "jwt-issuer", "", "required iss claim (empty: not checked)")
	f.StringVar(&c.UserClaim, "jwt-user-claim", DefaultUserClaim, "claim that becomes the connection's user ID")
	f.DurationVar(&c.Leeway, "jwt-leeway", DefaultLeeway, "clock skew allowed on exp and nbf")
}

// Enabled reports whether a key source is configured: without one the
// node runs no JWT authorizer.
func (c Config) Enabled() bool { return c.KeysFile != "" || c.JWKSFile != "" }

// Validate reports whether c is usable.
func (c Config) Validate() error {
	if c.KeysFile == "" && c.JWKSFile == "" {
		return errors.New("authn: KeysFile or JWKSFile is required")
	}
	for _, a := range c.Algorithms {
		if a != HS256 && a != RS256 && a != ES256 {
			return fmt.Errorf("authn: algorithm %q not supported (HS256, RS256, ES256)", a)
		}
	}
	if c.Header != "" && !validHeaderName(c.Header) {
		return fmt.Errorf("authn: header name %q", c.Header)
	}
	if c.SubprotocolPrefix != "" && strings.ContainsAny(c.SubprotocolPrefix, " \t,") {
		return fmt.Errorf("authn: subprotocol prefix %q", c.SubprotocolPrefix)
	}
	if c.MaxTokenBytes < 0 || c.MaxPrincipalBytes < 0 || c.ReloadInterval < 0 {
		return errors.New("authn: negative limit")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{HS256, RS256, ES256}
	}
	c.Algorithms = slices.Clone(c.Algorithms)
	if c.Header == "" {
		c.Header = DefaultHeader
	}
	c.Header = http.CanonicalHeaderKey(c.Header)
	if c.UserClaim == "" {
		c.UserClaim = DefaultUserClaim
	}
	switch {
	case c.Leeway == 0:
		c.Leeway = DefaultLeeway
	case c.Leeway < 0:
		c.Leeway = 0
	}
	if c.MaxTokenBytes == 0 {
		c.MaxTokenBytes = 8192
	}
	if c.MaxPrincipalBytes == 0 {
		c.MaxPrincipalBytes = 8192
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = 5 * time.Second
	}
	if c.ValidUserID == nil {
		c.ValidUserID = defaultValidUserID
	}
	return c
}

func defaultValidUserID(s string) bool {
	if len(s) == 0 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func validHeaderName(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return k != ""
}
