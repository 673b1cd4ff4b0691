package api

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/switchboardgw/switchboard/internal/flagext"
)

// Defaults, API Gateway's where it has one.
const (
	DefaultMaxMessageBytes   = 128 << 10 // API Gateway's @connections payload limit
	DefaultMaxBatchItems     = 100
	DefaultMaxBatchBytes     = 1 << 20
	DefaultBatchConcurrency  = 8
	DefaultCallTimeout       = 10 * time.Second
	DefaultTokenFilePoll     = 5 * time.Second
	DefaultMaxClockSkew      = 15 * time.Minute // AWS's SigV4 window
	DefaultSigningService    = "execute-api"
	maxConfiguredBodyLimit   = 64 << 20
	defaultDeleteCloseCode   = 1000
	defaultDeleteCloseReason = "Connection Closed Normally" // what API Gateway's $disconnect reports after DeleteConnection
)

// Config configures the @connections API. The zero value is not usable on its
// own: choose authentication (Auth), or Insecure, or LoopbackOnly.
type Config struct {
	// MaxMessageBytes is the largest POST body, one message. Larger → 413
	// PayloadTooLargeException. Default 131072 (128 KiB, API Gateway's limit).
	MaxMessageBytes int

	// CallTimeout bounds each call into the connection Controller (the
	// request's own context is honoured as well). Default 10s.
	CallTimeout time.Duration

	// OctetStreamBinary makes "Content-Type: application/octet-stream" always
	// send a binary frame. Default false: the AWS SDKs send octet-stream on
	// every PostToConnection, so by default it is treated like a missing
	// Content-Type (text frame if the body is valid UTF-8, else binary) and an
	// app migrated from API Gateway keeps receiving text frames. The header
	// "X-Switchboard-Frame: binary|text" always decides when present.
	OctetStreamBinary bool

	// MaxBatchItems is the largest number of messages in one batch call
	// (POST .../@connections, an extension). Default 100.
	MaxBatchItems int
	// MaxBatchBytes is the largest batch request body. Default 1 MiB.
	MaxBatchBytes int
	// BatchConcurrency is how many messages of one batch are sent at once.
	// Default 8.
	BatchConcurrency int

	// Auth selects how callers authenticate. Default: none configured.
	Auth AuthConfig

	// Insecure accepts every request without authentication. It must be set
	// explicitly and excludes Auth. Default false.
	Insecure bool

	// LoopbackOnly accepts requests from loopback addresses only (and the
	// caller binds the listener to loopback). Required when no Auth is
	// configured and Insecure is false. Default false. Without Auth, the
	// request's Host must also name loopback (localhost or a loopback IP),
	// so a web page cannot reach the API through DNS rebinding.
	LoopbackOnly bool

	// AllowedOrigins are the Origin header values accepted, compared
	// case-insensitively (e.g. "https://admin.example.com"). A request that
	// carries any other Origin is refused with 403: only browsers send
	// Origin, and without this a web page the operator visits could POST to
	// an unauthenticated loopback API. The AWS SDKs, curl and servers send
	// none and are not affected. Default none: every Origin is refused.
	AllowedOrigins []string

	// badAccessKey is a malformed -api-access-keys entry (redacted),
	// reported by Validate: the flag's own error would print the secret.
	badAccessKey string
}

// RegisterFlags binds the fields an operator sets to flags, each with the
// default a zero field has. The listen address and LoopbackOnly are the
// caller's: it owns the listener.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	flagext.StringListVar(f, &c.Auth.Tokens, "api-tokens", "comma-separated bearer tokens accepted by the @connections API")
	f.StringVar(&c.Auth.TokenFile, "api-tokens-file", "", "file of bearer tokens, one per line, re-read when it changes")
	f.Var(accessKeysFlag{c}, "api-access-keys", "comma-separated ACCESS_KEY_ID:SECRET pairs for AWS SigV4 (the AWS SDK with static credentials)")
	f.BoolVar(&c.Insecure, "api-insecure", false, "serve the @connections API without authentication on any address")
	f.IntVar(&c.MaxMessageBytes, "api-max-body", DefaultMaxMessageBytes, "largest @connections POST body (413 above)")
	flagext.StringListVar(f, &c.AllowedOrigins, "api-allowed-origins", "comma-separated Origin values (scheme://host[:port]) the @connections API accepts from browsers; a request with any other Origin header gets 403 (empty: every Origin refused; SDKs and curl send none)")
	flagext.StringListVar(f, &c.Auth.Hosts, "api-sigv4-host", "comma-separated hosts a SigV4 signature must have been made for (the signed Host; an entry without a port matches any port); others get 403 (empty: any host)")
	f.BoolVar(&c.OctetStreamBinary, "api-octet-stream-binary", false, "a POST with Content-Type application/octet-stream always sends a binary frame (default: text when the body is valid UTF-8, since the AWS SDKs send octet-stream for everything)")
}

// accessKeysFlag is -api-access-keys: ID:SECRET pairs into Auth.AccessKeys.
type accessKeysFlag struct{ c *Config }

// String lists the key IDs only.
func (a accessKeysFlag) String() string {
	if a.c == nil {
		return ""
	}
	ids := make([]string, 0, len(a.c.Auth.AccessKeys))
	for id := range a.c.Auth.AccessKeys {
		ids = append(ids, id+":…")
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

func (a accessKeysFlag) Set(s string) error {
	a.c.Auth.AccessKeys, a.c.badAccessKey = nil, ""
	var pairs []string
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			pairs = append(pairs, kv)
		}
	}
	for _, kv := range pairs {
		id, secret, ok := strings.Cut(kv, ":")
		if !ok || id == "" || secret == "" {
			a.c.badAccessKey = id + ":…"
			continue
		}
		if a.c.Auth.AccessKeys == nil {
			a.c.Auth.AccessKeys = map[string]string{}
		}
		a.c.Auth.AccessKeys[id] = secret
	}
	return nil
}

// AuthConfig configures caller authentication. Several methods may be
// configured at once; a request passes if it passes the method its
// Authorization header names.
type AuthConfig struct {
	// Tokens are static bearer tokens ("Authorization: Bearer <token>").
	// Default none.
	Tokens []string

	// TokenFile is a file of bearer tokens, one per line; blank lines and
	// lines starting with '#' are ignored. It is read by New, re-read when
	// its modification time or size changes (Run polls it) and on Reload;
	// a failed re-read keeps the previous tokens. Default "" (none).
	TokenFile string

	// TokenFilePollInterval is how often Run checks TokenFile for changes.
	// Default 5s.
	TokenFilePollInterval time.Duration

	// AccessKeys maps AWS access key IDs to their secret keys: requests signed
	// with AWS Signature Version 4 by one of them are accepted. Default none.
	AccessKeys map[string]string

	// Region, when set, is the only region accepted in a SigV4 credential
	// scope. Default "" (any region: the SDK signs with whatever region it
	// was configured with).
	Region string

	// Service is the signing name accepted in a SigV4 credential scope.
	// Default "execute-api" (what the apigatewaymanagementapi SDKs use).
	Service string

	// MaxClockSkew is how far a SigV4 request's X-Amz-Date may be from now.
	// Default 15m (AWS's window).
	MaxClockSkew time.Duration

	// Hosts, when set, are the only Host values a SigV4 signature is
	// accepted for, compared case-insensitively: a request signed for
	// another host (another gateway sharing the keys, another service) is
	// refused with 403. An entry without a port matches any port; one with
	// a port matches that port only. Default none (any host).
	Hosts []string
}

// Configured reports whether any authentication method is configured.
func (a AuthConfig) Configured() bool {
	return len(a.Tokens) > 0 || a.TokenFile != "" || len(a.AccessKeys) > 0
}

// RequiresLoopback reports whether the API must only be reachable over
// loopback: LoopbackOnly is set, or nothing authenticates callers and
// Insecure was not chosen. The caller binds the listener to 127.0.0.1 then;
// the handler also refuses non-loopback peers.
func (c Config) RequiresLoopback() bool {
	return c.LoopbackOnly || (!c.Auth.Configured() && !c.Insecure)
}

// Validate reports the first problem with c. Zero values mean defaults.
func (c Config) Validate() error {
	var errs []error
	checkNonNeg := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %d)", name, v))
		}
	}
	checkNonNeg("MaxMessageBytes", int64(c.MaxMessageBytes))
	checkNonNeg("MaxBatchItems", int64(c.MaxBatchItems))
	checkNonNeg("MaxBatchBytes", int64(c.MaxBatchBytes))
	checkNonNeg("BatchConcurrency", int64(c.BatchConcurrency))
	checkNonNeg("CallTimeout", int64(c.CallTimeout))
	checkNonNeg("Auth.TokenFilePollInterval", int64(c.Auth.TokenFilePollInterval))
	checkNonNeg("Auth.MaxClockSkew", int64(c.Auth.MaxClockSkew))
	if c.MaxMessageBytes > maxConfiguredBodyLimit || c.MaxBatchBytes > maxConfiguredBodyLimit {
		errs = append(errs, fmt.Errorf("MaxMessageBytes and MaxBatchBytes must be at most %d", maxConfiguredBodyLimit))
	}
	if c.Insecure && c.Auth.Configured() {
		errs = append(errs, errors.New("Insecure is set but authentication is configured: choose one"))
	}
	if !c.Insecure && !c.Auth.Configured() && !c.LoopbackOnly {
		errs = append(errs, errors.New("no authentication configured: set Auth, or LoopbackOnly (bind to loopback), or Insecure explicitly"))
	}
	for i, t := range c.Auth.Tokens {
		if err := checkToken(t); err != nil {
			errs = append(errs, fmt.Errorf("Auth.Tokens[%d]: %w", i, err))
		}
	}
	if c.badAccessKey != "" {
		errs = append(errs, fmt.Errorf("api access key %q: want ACCESS_KEY_ID:SECRET", c.badAccessKey))
	}
	if len(c.Auth.Hosts) > 0 && len(c.Auth.AccessKeys) == 0 {
		errs = append(errs, errors.New("-api-sigv4-host pins the host of SigV4 signatures: it needs -api-access-keys (Auth.Hosts needs Auth.AccessKeys)"))
	}
	for i, h := range c.Auth.Hosts {
		if h == "" || strings.ContainsAny(h, " \t/,") {
			errs = append(errs, fmt.Errorf("Auth.Hosts[%d]: invalid host %q", i, h))
		}
	}
	for i, o := range c.AllowedOrigins {
		if !ValidOrigin(o) {
			errs = append(errs, fmt.Errorf("-api-allowed-origins %q (AllowedOrigins[%d]): want an origin, scheme://host[:port]", o, i))
		}
	}
	for id, secret := range c.Auth.AccessKeys {
		if id == "" || strings.ContainsAny(id, "/ ,=") {
			errs = append(errs, fmt.Errorf("Auth.AccessKeys: invalid access key id %q", id))
		}
		if secret == "" {
			errs = append(errs, fmt.Errorf("Auth.AccessKeys[%q]: empty secret", id))
		}
	}
	return errors.Join(errs...)
}

func checkToken(t string) error {
	if t == "" {
		return errors.New("empty token")
	}
	if strings.ContainsAny(t, " \t\r\n") {
		return errors.New("token contains whitespace")
	}
	return nil
}

// withDefaults returns c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxBatchItems == 0 {
		c.MaxBatchItems = DefaultMaxBatchItems
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.BatchConcurrency == 0 {
		c.BatchConcurrency = DefaultBatchConcurrency
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.Auth.TokenFilePollInterval == 0 {
		c.Auth.TokenFilePollInterval = DefaultTokenFilePoll
	}
	if c.Auth.MaxClockSkew == 0 {
		c.Auth.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.Auth.Service == "" {
		c.Auth.Service = DefaultSigningService
	}
	return c
}
