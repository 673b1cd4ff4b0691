package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, header form ("Authorization: AWS4-HMAC-SHA256
// Credential=…, SignedHeaders=…, Signature=…"), verified the way the AWS SDKs
// sign: the canonical request is rebuilt from the request as received and
// signed again with the secret of the named access key.

const (
	sigAlgorithm  = "AWS4-HMAC-SHA256"
	sigTerminator = "aws4_request"
	amzDateLayout = "20060102T150405Z"
)

var (
	errSigMalformed = errors.New("malformed SigV4 authorization header")
	errSigKey       = errors.New("unknown access key")
	errSigScope     = errors.New("credential scope not accepted")
	errSigDate      = errors.New("request date missing or outside the allowed clock skew")
	errSigMismatch  = errors.New("signature does not match")
	errSigHost      = errors.New("signed for a host this API does not answer to")
)

type sigVerifier struct {
	keys    map[string]string
	region  string // "" = any
	service string
	skew    time.Duration
	hosts   []string // "" entries never; empty = any host
}

// hostAllowed reports whether the Host the request was signed for is one of
// the configured hosts. An entry without a port matches the host on any
// port; the SDKs sign "host:port" for a non-default port and the bare host
// for 80 and 443, so a Host without a port also matches an entry naming
// either of those.
func (v *sigVerifier) hostAllowed(host string) bool {
	if len(v.hosts) == 0 {
		return true
	}
	bare, port := host, ""
	if h, p, err := net.SplitHostPort(host); err == nil {
		bare, port = h, p
	}
	bare = strings.Trim(bare, "[]")
	for _, want := range v.hosts {
		wh, wp, err := net.SplitHostPort(want)
		if err != nil { // no port in the entry: any port
			if strings.EqualFold(bare, strings.Trim(want, "[]")) {
				return true
			}
			continue
		}
		if !strings.EqualFold(bare, wh) {
			continue
		}
		if port == wp || port == "" && (wp == "443" || wp == "80") {
			return true
		}
	}
	return false
}

// sigRequest is a parsed, not yet verified, SigV4 request.
type sigRequest struct {
	r             *http.Request
	secret        string
	amzDate       string
	scope         string // date/region/service/aws4_request
	date, region  string
	service       string
	signedHeaders []string
	signedRaw     string
	signature     []byte // decoded
}

// parse checks everything that does not need the body: header shape, known
// access key, scope (service, region, date) and clock skew.
func (v *sigVerifier) parse(r *http.Request, now time.Time) (*sigRequest, error) {
	h := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(h, sigAlgorithm+" ")
	if !ok {
		return nil, errSigMalformed
	}
	var cred, signed, sig string
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, errSigMalformed
		}
		switch k {
		case "Credential":
			cred = val
		case "SignedHeaders":
			signed = val
		case "Signature":
			sig = val
		default:
			return nil, errSigMalformed
		}
	}
	if cred == "" || signed == "" || len(sig) != 2*sha256.Size {
		return nil, errSigMalformed
	}
	sr := &sigRequest{r: r, signedRaw: signed}
	var err error
	if sr.signature, err = hex.DecodeString(sig); err != nil {
		return nil, errSigMalformed
	}
	parts := strings.Split(cred, "/")
	if len(parts) != 5 {
		return nil, errSigMalformed
	}
	keyID, date, region, service, term := parts[0], parts[1], parts[2], parts[3], parts[4]
	secret, ok := v.keys[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", errSigKey, keyID)
	}
	if term != sigTerminator || service != v.service || region == "" || (v.region != "" && region != v.region) {
		return nil, fmt.Errorf("%w: %s/%s/%s", errSigScope, region, service, term)
	}
	sr.secret, sr.date, sr.region, sr.service = secret, date, region, service
	sr.scope = date + "/" + region + "/" + service + "/" + sigTerminator

	sr.amzDate = r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateLayout, sr.amzDate)
	if err != nil || !strings.HasPrefix(sr.amzDate, date) {
		return nil, errSigDate
	}
	if d := now.Sub(t); d > v.skew || d < -v.skew {
		return nil, fmt.Errorf("%w: %s", errSigDate, sr.amzDate)
	}

	sr.signedHeaders = strings.Split(signed, ";")
	hasHost, hasDate := false, false
	for i, name := range sr.signedHeaders {
		if name == "" || name != strings.ToLower(name) || (i > 0 && sr.signedHeaders[i-1] >= name) {
			return nil, errSigMalformed // must be lower case, sorted, unique
		}
		hasHost = hasHost || name == "host"
		hasDate = hasDate || name == "x-amz-date"
	}
	if !hasHost || !hasDate {
		// an unsigned date could be moved forward to replay the request
		return nil, errSigMalformed
	}
	// Host is signed (checked above), so r.Host is the host the caller
	// signed for: a signature made for another endpoint sharing these keys
	// is not replayed here.
	if !v.hostAllowed(r.Host) {
		return nil, fmt.Errorf("%w: %q", errSigHost, truncate(r.Host, 100))
	}
	return sr, nil
}

// verify checks the signature given the SHA-256 of the body as received.
func (sr *sigRequest) verify(payloadHash [sha256.Size]byte) error {
	key := signingKey(sr.secret, sr.date, sr.region, sr.service)
	payload := hex.EncodeToString(payloadHash[:])
	query, err := canonicalQuery(sr.r.URL.RawQuery)
	if err != nil {
		return errSigMalformed
	}
	headers := sr.canonicalHeaders()
	raw := requestPath(sr.r)
	// The Go and Java SDKs sign the path as sent; the JS and Python SDKs
	// normalise it first (empty and dot segments removed). Accept either.
	candidates := [2]string{awsEscapePath(raw), ""}
	if n := normalizePath(raw); n != raw {
		candidates[1] = awsEscapePath(n)
	}
	for _, uri := range candidates {
		if uri == "" {
			continue
		}
		canonical := strings.Join([]string{sr.r.Method, uri, query, headers, sr.signedRaw, payload}, "\n")
		sum := sha256.Sum256([]byte(canonical))
		toSign := sigAlgorithm + "\n" + sr.amzDate + "\n" + sr.scope + "\n" + hex.EncodeToString(sum[:])
		if hmac.Equal(hmacSHA256(key, toSign), sr.signature) {
			return nil
		}
	}
	return errSigMismatch
}

func (sr *sigRequest) canonicalHeaders() string {
	var b strings.Builder
	for _, name := range sr.signedHeaders {
		b.WriteString(name)
		b.WriteByte(':')
		switch name {
		case "host":
			b.WriteString(collapseSpaces(sr.r.Host))
		case "content-length":
			if v := sr.r.Header.Values("Content-Length"); len(v) > 0 {
				b.WriteString(collapseSpaces(v[0]))
			} else {
				b.WriteString(strconv.FormatInt(sr.r.ContentLength, 10))
			}
		default:
			for i, v := range sr.r.Header.Values(name) {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(collapseSpaces(v))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, sigTerminator)
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// collapseSpaces trims leading and trailing spaces and collapses runs of
// spaces to one, as the SigV4 canonical header value requires.
func collapseSpaces(s string) string {
	s = strings.Trim(s, " \t")
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	space := false
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// canonicalQuery encodes each name and value, then sorts the pairs (sorting
// after encoding, as SigV4 specifies).
func canonicalQuery(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "", err
	}
	type pair struct{ k, v string }
	pairs := make([]pair, 0, len(q))
	for k, vs := range q {
		ek := awsEscape(k, true)
		for _, v := range vs {
			pairs = append(pairs, pair{ek, awsEscape(v, true)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String(), nil
}

// awsEscapePath escapes the already escaped path once more, keeping '/':
// SigV4 for every service but S3 double-encodes the path.
func awsEscapePath(p string) string {
	if p == "" {
		return "/"
	}
	return awsEscape(p, false)
}

// awsEscape percent-encodes every byte but A-Z a-z 0-9 - _ . ~ (and '/'
// unless escapeSlash).
func awsEscape(s string, escapeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !escapeSlash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// normalizePath removes empty and "." segments and resolves "..", keeping a
// trailing slash: the normalisation the JS and Python signers apply.
func normalizePath(p string) string {
	var segs []string
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, s)
		}
	}
	out := "/" + strings.Join(segs, "/")
	if len(segs) > 0 && strings.HasSuffix(p, "/") {
		out += "/"
	}
	return out
}

// requestPath is the path as the client sent it, still escaped.
func requestPath(r *http.Request) string {
	if u := r.RequestURI; u != "" && u[0] == '/' {
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		return u
	}
	return r.URL.EscapedPath()
}
