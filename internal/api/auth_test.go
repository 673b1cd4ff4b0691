package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/switchboardgw/switchboard/internal/conn"
)

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestBearerTokens(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{Auth: AuthConfig{Tokens: []string{"tok-one", "tok-two"}}}, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	u := srv.URL + "/@connections/" + id

	for _, tok := range []string{"tok-one", "tok-two"} {
		if status, _, body := do(t, "POST", u, bearer(tok), []byte(tok)); status != 200 {
			t.Fatalf("token %q: %d %s", tok, status, body)
		}
	}
	if status, _, _ := do(t, "POST", u, map[string]string{"Authorization": "bearer tok-one"}, []byte("scheme is case-insensitive")); status != 200 {
		t.Fatalf("lower-case scheme: %d", status)
	}
	for _, h := range []map[string]string{nil, bearer("tok-on"), bearer("tok-one-"), bearer(""), {"Authorization": "Basic dG9rLW9uZQ=="}, {"Authorization": "tok-one"}} {
		status, hdr, body := do(t, "POST", u, h, []byte("intruder"))
		wantError(t, status, hdr, body, 403, "ForbiddenException")
	}
	if got := f.messages(id); len(got) != 3 {
		t.Fatalf("delivered %d messages, want the 3 authorised ones", len(got))
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // atomic replace, as operators should
		t.Fatal(err)
	}
}

func TestTokenFileIsReloadedWhenItChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, "# backend tokens\n\nold-token\n  spaced-token  \n")
	f := newFake()
	cfg := Config{Auth: AuthConfig{TokenFile: path, TokenFilePollInterval: 20 * time.Millisecond, Tokens: []string{"static-token"}}}
	a, _ := newTestAPI(t, cfg, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	u := srv.URL + "/@connections/" + id
	status := func(tok string) int { s, _, _ := do(t, "HEAD", u, bearer(tok), nil); return s }

	for _, tok := range []string{"old-token", "spaced-token", "static-token"} {
		if s := status(tok); s != 200 {
			t.Fatalf("token %q from the start: %d", tok, s)
		}
	}
	if s := status("# backend tokens"); s != 403 {
		t.Fatalf("a comment line works as a token: %d", s)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()

	writeFile(t, path, "new-token\n# old-token revoked\n")
	eventually(t, "new token accepted", func() bool { return status("new-token") == 200 })
	if s := status("old-token"); s != 403 {
		t.Fatalf("revoked token still accepted: %d", s)
	}
	if s := status("static-token"); s != 200 {
		t.Fatalf("static token lost on reload: %d", s)
	}

	// A broken file keeps the previous tokens.
	writeFile(t, path, "bad token with spaces\n")
	if err := a.Reload(); err == nil {
		t.Fatal("Reload of a malformed file succeeded")
	}
	if s := status("new-token"); s != 200 {
		t.Fatalf("previous tokens dropped after a failed reload: %d", s)
	}

	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after Shutdown")
	}
}

func TestReloadWithoutRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, "first\n")
	f := newFake()
	a, _ := newTestAPI(t, Config{Auth: AuthConfig{TokenFile: path}}, f)
	srv := serve(t, a)
	u := srv.URL + "/@connections/" + f.add(conn.Info{})
	writeFile(t, path, "second\n")
	if err := a.Reload(); err != nil { // e.g. on SIGHUP
		t.Fatal(err)
	}
	if s, _, _ := do(t, "HEAD", u, bearer("second"), nil); s != 200 {
		t.Fatalf("token after Reload: %d", s)
	}
	if s, _, _ := do(t, "HEAD", u, bearer("first"), nil); s != 403 {
		t.Fatalf("replaced token after Reload: %d", s)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown without Run: %v", err)
	}
}

// signedRequest signs a request with the SDK's own SigV4 signer.
func signedRequest(t *testing.T, method, rawURL string, body []byte, signTime time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req, _ = http.NewRequest(method, rawURL, bytesReader(body))
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: testKeyID, SecretAccessKey: testSecret},
		req, hex.EncodeToString(sum[:]), "execute-api", "ap-southeast-2", signTime)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestSigV4QueryAndEscapedPaths(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, sigV4Config(), f)
	srv := serve(t, a)

	// DELETE with the close-code extension: the query is part of the signature.
	id := f.add(conn.Info{})
	q := url.Values{"code": {"4401"}, "reason": {"token expired ~ (a/b) ü"}, "a-b": {"x"}, "a": {"y", "b"}}
	req := signedRequest(t, "DELETE", srv.URL+"/prod/@connections/"+id+"?"+q.Encode(), nil, time.Now())
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("signed DELETE with query: %d", resp.StatusCode)
	}
	if closed, code, reason := f.closedWith(id); !closed || code != 4401 || reason != "token expired ~ (a/b) ü" {
		t.Fatalf("closed=%v code=%d reason=%q", closed, code, reason)
	}

	// Escaped stage and %40 for '@', signed as sent.
	id = f.add(conn.Info{})
	req = signedRequest(t, "POST", srv.URL+"/my%20stage/%40connections/"+id, []byte("hi"), time.Now())
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(f.messages(id)) != 1 {
		t.Fatalf("signed POST with escaped path: %d, %d messages", resp.StatusCode, len(f.messages(id)))
	}

	// The same request arriving later than the window: refused.
	late, _ := newTestAPI(t, sigV4Config(), f)
	late.now = func() time.Time { return time.Now().Add(time.Hour) }
	srv = serve(t, late)
	req = signedRequest(t, "POST", srv.URL+"/prod/@connections/"+id, []byte("again"), time.Now())
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("stale signed request: %d, want 403", resp.StatusCode)
	}
}

func TestSigV4TooLargeBodyIsRefusedBeforeHashing(t *testing.T) {
	f := newFake()
	cfg := sigV4Config()
	cfg.MaxMessageBytes = 10
	a, _ := newTestAPI(t, cfg, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	req := signedRequest(t, "POST", srv.URL+"/prod/@connections/"+id, []byte("more than ten bytes"), time.Now())
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
	// An unknown key still gets 403, not 413: the key is checked first.
	req = signedRequest(t, "POST", srv.URL+"/prod/@connections/"+id, []byte("more than ten bytes"), time.Now())
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=NOPE/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature="+hex.EncodeToString(make([]byte, 32)))
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("unknown key with a large body: %d, want 403", resp.StatusCode)
	}
}

func TestSigV4ParseRejectsMalformedHeaders(t *testing.T) {
	v := &sigVerifier{keys: map[string]string{testKeyID: testSecret}, service: "execute-api", skew: DefaultMaxClockSkew}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	date := now.Format(amzDateLayout)
	sig := hex.EncodeToString(make([]byte, 32))
	good := "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260102/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig
	mk := func(auth, amzDate string) *http.Request {
		r, _ := http.NewRequest("GET", "http://h/@connections/x", nil)
		r.Header.Set("Authorization", auth)
		r.Header.Set("X-Amz-Date", amzDate)
		return r
	}
	if _, err := v.parse(mk(good, date), now); err != nil {
		t.Fatalf("well-formed header refused: %v", err)
	}
	bad := []struct{ name, auth, date string }{
		{"wrong service", "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260102/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig, date},
		{"date unsigned", "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260102/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=" + sig, date},
		{"host unsigned", "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260102/us-east-1/execute-api/aws4_request, SignedHeaders=x-amz-date, Signature=" + sig, date},
		{"unsorted signed headers", "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260102/us-east-1/execute-api/aws4_request, SignedHeaders=x-amz-date;host, Signature=" + sig, date},
		{"scope date differs", "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig, date},
		{"short signature", "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260102/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcd", date},
		{"missing date", good, ""},
		{"unknown field", good + ", Extra=1", date},
		{"short credential", "AWS4-HMAC-SHA256 Credential=" + testKeyID + "/20260102/us-east-1, SignedHeaders=host;x-amz-date, Signature=" + sig, date},
	}
	for _, b := range bad {
		if _, err := v.parse(mk(b.auth, b.date), now); err == nil {
			t.Fatalf("%s: accepted", b.name)
		} else if !errors.Is(err, errSigMalformed) && !errors.Is(err, errSigScope) && !errors.Is(err, errSigDate) {
			t.Fatalf("%s: unexpected error %v", b.name, err)
		}
	}
}
