package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tokenSet holds SHA-256 digests of the accepted bearer tokens. Comparing
// digests of equal length keeps the comparison constant-time whatever the
// token lengths.
type tokenSet struct {
	digests [][sha256.Size]byte
}

func (s *tokenSet) match(token string) bool {
	if s == nil {
		return false
	}
	d := sha256.Sum256([]byte(token))
	found := 0
	for i := range s.digests {
		found |= subtle.ConstantTimeCompare(d[:], s.digests[i][:])
	}
	return found == 1
}

// tokens is the live bearer token set: the static ones plus the file's,
// swapped atomically when the file changes.
type tokens struct {
	static []string
	file   string

	mu      sync.Mutex // serialises reloads
	fileMod time.Time
	fileLen int64
	set     atomic.Pointer[tokenSet]
}

func newTokens(static []string, file string) (*tokens, error) {
	t := &tokens{static: static, file: file}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// reload re-reads the token file (if any) and swaps in the new set. On error
// the previous set stays in force.
func (t *tokens) reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := append([]string(nil), t.static...)
	if t.file != "" {
		fi, err := os.Stat(t.file)
		if err != nil {
			return fmt.Errorf("api: token file: %w", err)
		}
		data, err := os.ReadFile(t.file)
		if err != nil {
			return fmt.Errorf("api: token file: %w", err)
		}
		fromFile, err := parseTokenFile(data)
		if err != nil {
			return fmt.Errorf("api: token file %s: %w", t.file, err)
		}
		all = append(all, fromFile...)
		t.fileMod, t.fileLen = fi.ModTime(), fi.Size()
	}
	s := &tokenSet{digests: make([][sha256.Size]byte, len(all))}
	for i, tok := range all {
		s.digests[i] = sha256.Sum256([]byte(tok))
	}
	t.set.Store(s)
	return nil
}

// changed reports whether the token file looks different from the last read.
func (t *tokens) changed() bool {
	if t.file == "" {
		return false
	}
	fi, err := os.Stat(t.file)
	if err != nil {
		return false // keep the tokens we have; a rename-into-place shows up next poll
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !fi.ModTime().Equal(t.fileMod) || fi.Size() != t.fileLen
}

// parseTokenFile reads one token per line; blank lines and '#' comments are
// skipped, surrounding whitespace trimmed.
func parseTokenFile(data []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' {
			continue
		}
		if err := checkToken(s); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// authResult is the outcome of the header-only part of authentication.
type authResult struct {
	ok  bool
	sig *sigRequest // non-nil: SigV4, the signature still needs the payload hash
}

// authenticate checks what can be checked before the body is read. Bearer
// tokens are decided here; a SigV4 request is parsed and its key and date
// checked, its signature verified once the body has been read.
func (a *API) authenticate(r *http.Request, now time.Time) (authResult, *apiError) {
	if a.cfg.RequiresLoopback() && !isLoopback(r.RemoteAddr) {
		return authResult{}, errForbidden()
	}
	if e := a.checkBrowser(r); e != nil {
		return authResult{}, e
	}
	if !a.cfg.Auth.Configured() {
		return authResult{ok: true}, nil // Insecure or LoopbackOnly
	}
	h := r.Header.Get("Authorization")
	switch {
	case len(h) > 7 && strings.EqualFold(h[:7], "Bearer "):
		if a.tokens != nil && a.tokens.set.Load().match(strings.TrimSpace(h[7:])) {
			return authResult{ok: true}, nil
		}
	case strings.HasPrefix(h, sigAlgorithm+" "):
		if a.sigv4 == nil {
			break
		}
		sr, err := a.sigv4.parse(r, now)
		if err != nil {
			a.logAuthFailure(r, err)
			break
		}
		return authResult{sig: sr}, nil
	}
	return authResult{}, errForbidden()
}

func (a *API) logAuthFailure(r *http.Request, err error) {
	a.log.Debug("api: authentication failed", "remote", r.RemoteAddr, "err", err)
}

func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
