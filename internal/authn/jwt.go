package authn

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// Result is what a valid token grants.
type Result struct {
	// UserID is the user claim.
	UserID string
	// Principal is the authorizer object for events:
	// {"principalId":<user>,"jwt":{"claims":{…}}}, the shape API Gateway's
	// JWT authorizers use, at most Config.MaxPrincipalBytes.
	Principal json.RawMessage
	// Subprotocol to echo in the 101 when the token came in
	// Sec-WebSocket-Protocol: the first other entry the client offered
	// (browsers fail a handshake whose offered protocols get no answer).
	// Never the token. Empty otherwise.
	Subprotocol string
}

// Error is a refused token. Every Error means 401.
type Error struct {
	// Reason is a short fixed word, safe as a metric label: missing,
	// too_large, malformed, key, signature, expired, not_yet_valid,
	// audience, issuer, claims, user.
	Reason string
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "authn: token " + e.Reason
	}
	return "authn: token " + e.Reason + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNoToken: the request carries no token where the authorizer looks.
var ErrNoToken = &Error{Reason: "missing"}

// StatusOf maps an Authorize error to the HTTP status of the rejected
// upgrade: 200 for nil, 401 for a refused token, 500 for anything else.
func StatusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	if errors.As(err, new(*Error)) {
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// ReasonOf is the Error's Reason, or "error".
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "error"
}

// JWT is the authorizer. Safe for concurrent use.
type JWT struct {
	cfg    Config
	files  []*keyFile
	parser *jwt.Parser
	now    func() time.Time
}

// New loads the keys and builds an authorizer. log receives key reload
// failures (nil: slog.Default()).
func New(cfg Config, log *slog.Logger) (*JWT, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	onErr := func(path string, err error) {
		log.Warn("authn: key file not reloaded; keeping the previous keys", "file", path, "err", err)
	}
	a := &JWT{cfg: cfg, now: time.Now}
	if cfg.KeysFile != "" {
		f, err := newKeyFile(cfg.KeysFile, parseKeysFile, cfg.ReloadInterval, onErr)
		if err != nil {
			return nil, err
		}
		a.files = append(a.files, f)
	}
	if cfg.JWKSFile != "" {
		f, err := newKeyFile(cfg.JWKSFile, parseJWKS, cfg.ReloadInterval, onErr)
		if err != nil {
			return nil, err
		}
		a.files = append(a.files, f)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(func() time.Time { return a.now() }),
	}
	if !cfg.AllowNoExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if len(cfg.Audience) > 0 {
		opts = append(opts, jwt.WithAudience(cfg.Audience...))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// Authorize checks the token r carries. A non-nil error is an *Error (401).
func (a *JWT) Authorize(r *edge.Request) (Result, error) {
	tok, fromProto := a.token(r)
	if tok == "" {
		return Result{}, ErrNoToken
	}
	return a.check(tok, fromProto, r.Protocols)
}

// token finds the token: header, then query parameter, then subprotocol.
func (a *JWT) token(r *edge.Request) (tok string, fromProto bool) {
	if v := r.Header.Get(a.cfg.Header); v != "" {
		scheme, rest, ok := strings.Cut(v, " ")
		switch {
		case ok && strings.EqualFold(scheme, "Bearer"):
			return strings.TrimSpace(rest), false
		case a.cfg.Header != "Authorization":
			return v, false
		}
	}
	if a.cfg.Query != "" && r.RawQuery != "" {
		// A malformed pair elsewhere in the query does not hide the token.
		q, _ := url.ParseQuery(r.RawQuery)
		if v := q.Get(a.cfg.Query); v != "" {
			return v, false
		}
	}
	if p := a.cfg.SubprotocolPrefix; p != "" {
		for _, s := range r.Protocols {
			if len(s) > len(p) && strings.HasPrefix(s, p) {
				return s[len(p):], true
			}
		}
	}
	return "", false
}

func (a *JWT) check(tok string, fromProto bool, protocols []string) (Result, error) {
	if len(tok) > a.cfg.MaxTokenBytes {
		return Result{}, &Error{Reason: "too_large", Err: fmt.Errorf("%d bytes (max %d)", len(tok), a.cfg.MaxTokenBytes)}
	}
	now := a.now()
	t, err := a.parser.Parse(tok, func(t *jwt.Token) (any, error) { return a.keysFor(t, now) })
	if err != nil {
		return Result{}, classify(err)
	}
	claims, _ := t.Claims.(jwt.MapClaims)
	uid, _ := claims[a.cfg.UserClaim].(string)
	if !a.cfg.ValidUserID(uid) {
		return Result{}, &Error{Reason: "user", Err: fmt.Errorf("claim %q is not a valid user ID", a.cfg.UserClaim)}
	}
	principal, err := a.principal(uid, tok)
	if err != nil {
		return Result{}, err
	}
	res := Result{UserID: uid, Principal: principal}
	if fromProto {
		for _, p := range protocols {
			if !strings.HasPrefix(p, a.cfg.SubprotocolPrefix) {
				res.Subprotocol = p
				break
			}
		}
	}
	return res, nil
}

// keysFor returns the keys that may verify t: of the type its algorithm
// needs, and matching its kid and the key's alg where those are set.
func (a *JWT) keysFor(t *jwt.Token, now time.Time) (any, error) {
	alg, _ := t.Header["alg"].(string)
	kid, _ := t.Header["kid"].(string)
	var set jwt.VerificationKeySet
	for _, f := range a.files {
		for _, k := range f.current(now) {
			if k.algorithm() != alg || k.alg != "" && k.alg != alg || kid != "" && k.kid != "" && k.kid != kid {
				continue
			}
			set.Keys = append(set.Keys, k.pub)
		}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("no %s key (kid %q)", alg, kid)
	}
	return set, nil
}

// principal builds the authorizer object from the token's own payload, so
// claims travel exactly as signed (no float rounding of large numbers).
func (a *JWT) principal(uid, tok string) (json.RawMessage, error) {
	parts := strings.SplitN(tok, ".", 3)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, &Error{Reason: "malformed", Err: err}
	}
	var claims bytes.Buffer
	if err := json.Compact(&claims, payload); err != nil {
		return nil, &Error{Reason: "malformed", Err: err}
	}
	id, _ := json.Marshal(uid)
	b := make([]byte, 0, len(id)+claims.Len()+40)
	b = append(b, `{"principalId":`...)
	b = append(b, id...)
	b = append(b, `,"jwt":{"claims":`...)
	b = append(b, claims.Bytes()...)
	b = append(b, "}}"...)
	if len(b) > a.cfg.MaxPrincipalBytes {
		return nil, &Error{Reason: "too_large", Err: fmt.Errorf("claims make a %d-byte principal (max %d)", len(b), a.cfg.MaxPrincipalBytes)}
	}
	return b, nil
}

// classify turns the jwt library's error into an *Error with a bounded reason.
func classify(err error) *Error {
	reason := "malformed"
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		reason = "signature"
	case errors.Is(err, jwt.ErrTokenExpired):
		reason = "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		reason = "not_yet_valid"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		reason = "audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		reason = "issuer"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		reason = "key" // no key of the token's algorithm (and kid)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrTokenInvalidClaims):
		reason = "claims"
	}
	return &Error{Reason: reason, Err: err}
}

// StripToken returns protocols without the token entry, for events and logs:
// the token is a credential and must not travel to backends as a protocol.
func (a *JWT) StripToken(protocols []string) []string {
	p := a.cfg.SubprotocolPrefix
	if p == "" || !slices.ContainsFunc(protocols, func(s string) bool { return strings.HasPrefix(s, p) }) {
		return protocols
	}
	return slices.DeleteFunc(slices.Clone(protocols), func(s string) bool { return strings.HasPrefix(s, p) })
}
