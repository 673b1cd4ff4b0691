package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// The real AWS SDK client, unchanged, pointed at Switchboard.

const (
	testKeyID  = "AKIDSWITCHBOARDTEST"
	testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
)

func staticCreds(id, secret string) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret, Source: "test"}, nil
	})
}

// noBackoff keeps the SDK's retry decisions but not its sleeps.
type noBackoff struct{}

func (noBackoff) BackoffDelay(int, error) (time.Duration, error) { return 0, nil }

// doerFunc lets a test stand between the SDK (after signing) and the server.
type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

type sdkOpts struct {
	creds  aws.CredentialsProvider
	region string
	stage  string
	client aws.HTTPClient
}

func sdkClient(t *testing.T, srv *httptest.Server, o sdkOpts) *apigatewaymanagementapi.Client {
	t.Helper()
	if o.region == "" {
		o.region = "eu-west-1"
	}
	if o.stage == "" {
		o.stage = "/prod"
	}
	if o.client == nil {
		o.client = srv.Client()
	}
	cfg := aws.Config{
		Region:      o.region,
		Credentials: o.creds,
		HTTPClient:  o.client,
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) { so.Backoff = noBackoff{} })
		},
	}
	return apigatewaymanagementapi.NewFromConfig(cfg, func(opt *apigatewaymanagementapi.Options) {
		opt.BaseEndpoint = aws.String(srv.URL + o.stage)
	})
}

func sigV4Config() Config {
	return Config{Auth: AuthConfig{AccessKeys: map[string]string{testKeyID: testSecret}}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// exerciseSDK runs the three operations and the error cases every auth mode shares.
func exerciseSDK(t *testing.T, f *fakeController, c *apigatewaymanagementapi.Client) {
	ctx := ctxT(t)
	id := f.add(conn.Info{Node: "edge-1", ConnectedAt: testConnectedAt, LastActiveAt: testConnectedAt.Add(time.Minute),
		SourceIP: "203.0.113.5", UserAgent: "Mozilla/5.0 (X11) test", UserID: "alice",
		// Extension members the SDK does not know: an object and an array.
		Principal: json.RawMessage(`{"role":"admin","scopes":["a","b"]}`), Groups: []string{"lobby"}})

	if _, err := c.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{
		ConnectionId: aws.String(id), Data: []byte(`{"msg":"hello"}`)}); err != nil {
		t.Fatalf("PostToConnection: %v", err)
	}
	// The SDK always sends application/octet-stream: JSON still arrives as text.
	if got := f.messages(id); len(got) != 1 || got[0] != (fakeMsg{data: `{"msg":"hello"}`}) {
		t.Fatalf("delivered %+v, want one text message", got)
	}

	out, err := c.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetConnection: %v", err)
	}
	if !out.ConnectedAt.Equal(testConnectedAt) || !out.LastActiveAt.Equal(testConnectedAt.Add(time.Minute)) ||
		aws.ToString(out.Identity.SourceIp) != "203.0.113.5" || aws.ToString(out.Identity.UserAgent) != "Mozilla/5.0 (X11) test" {
		t.Fatalf("GetConnection = %v %v %q %q", out.ConnectedAt, out.LastActiveAt, aws.ToString(out.Identity.SourceIp), aws.ToString(out.Identity.UserAgent))
	}

	_, err = c.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{
		ConnectionId: aws.String(id), Data: bytes.Repeat([]byte("x"), 128<<10+1)})
	var tooLarge *types.PayloadTooLargeException
	if !errors.As(err, &tooLarge) {
		t.Fatalf("PostToConnection 128 KiB + 1: err = %v, want PayloadTooLargeException", err)
	}
	if _, err := c.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{
		ConnectionId: aws.String(id), Data: bytes.Repeat([]byte("x"), 128<<10)}); err != nil {
		t.Fatalf("PostToConnection of exactly 128 KiB: %v", err)
	}

	if _, err := c.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String(id)}); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}
	if closed, code, reason := f.closedWith(id); !closed || code != 1000 || reason != "Connection Closed Normally" {
		t.Fatalf("after DeleteConnection: closed=%v %d %q", closed, code, reason)
	}

	var gone *types.GoneException
	_, err = c.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("late")})
	if !errors.As(err, &gone) {
		t.Fatalf("PostToConnection after delete: err = %v, want GoneException", err)
	}
	_, err = c.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(id)})
	if !errors.As(err, &gone) {
		t.Fatalf("GetConnection after delete: err = %v, want GoneException", err)
	}
	_, err = c.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String(conn.NewID())})
	if !errors.As(err, &gone) {
		t.Fatalf("DeleteConnection of an unknown id: err = %v, want GoneException", err)
	}
}

func TestAWSSDKWithSigV4(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, sigV4Config(), f)
	srv := serve(t, a)
	exerciseSDK(t, f, sdkClient(t, srv, sdkOpts{creds: staticCreds(testKeyID, testSecret)}))
}

func TestAWSSDKWithoutStage(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, sigV4Config(), f)
	srv := serve(t, a)
	exerciseSDK(t, f, sdkClient(t, srv, sdkOpts{creds: staticCreds(testKeyID, testSecret), stage: "/"}))
}

func TestAWSSDKAnonymousWhenInsecure(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{Insecure: true}, f)
	srv := serve(t, a)
	exerciseSDK(t, f, sdkClient(t, srv, sdkOpts{creds: aws.AnonymousCredentials{}, stage: "/dev/v1"}))
}

func TestAWSSDKAnonymousIsForbiddenWithAuth(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, sigV4Config(), f)
	srv := serve(t, a)
	c := sdkClient(t, srv, sdkOpts{creds: aws.AnonymousCredentials{}})
	id := f.add(conn.Info{})
	_, err := c.PostToConnection(ctxT(t), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("x")})
	var forbidden *types.ForbiddenException
	if !errors.As(err, &forbidden) {
		t.Fatalf("unsigned call: err = %v, want ForbiddenException", err)
	}
	if n := len(f.messages(id)); n != 0 {
		t.Fatalf("%d messages delivered by an unsigned call", n)
	}
}

// tamper returns an HTTP client that changes the signed request before
// sending it, as a man in the middle would.
func tamper(srv *httptest.Server, change func(*http.Request)) aws.HTTPClient {
	return doerFunc(func(r *http.Request) (*http.Response, error) {
		change(r)
		return srv.Client().Do(r)
	})
}

func TestSigV4RefusesWhatWasNotSignedBySomeoneWeKnow(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, sigV4Config(), f)
	srv := serve(t, a)
	victim := f.add(conn.Info{})
	other := f.add(conn.Info{})

	cases := []struct {
		name string
		opts sdkOpts
	}{
		{"wrong secret", sdkOpts{creds: staticCreds(testKeyID, "not-the-secret")}},
		{"unknown access key", sdkOpts{creds: staticCreds("AKIDSOMEONEELSE", testSecret)}},
		{"altered body", sdkOpts{creds: staticCreds(testKeyID, testSecret), client: tamper(srv, func(r *http.Request) {
			r.Body = io.NopCloser(bytes.NewReader([]byte("evil")))
			r.ContentLength = 4
		})}},
		{"altered path", sdkOpts{creds: staticCreds(testKeyID, testSecret), client: tamper(srv, func(r *http.Request) {
			r.URL.Path = "/prod/@connections/" + other
			r.URL.RawPath = ""
		})}},
		{"altered stage", sdkOpts{creds: staticCreds(testKeyID, testSecret), client: tamper(srv, func(r *http.Request) {
			r.URL.Path = "/test/@connections/" + victim
			r.URL.RawPath = ""
		})}},
		{"altered date", sdkOpts{creds: staticCreds(testKeyID, testSecret), client: tamper(srv, func(r *http.Request) {
			r.Header.Set("X-Amz-Date", time.Now().UTC().Add(time.Minute).Format(amzDateLayout))
		})}},
		{"added query", sdkOpts{creds: staticCreds(testKeyID, testSecret), client: tamper(srv, func(r *http.Request) {
			r.URL.RawQuery = "code=4000"
		})}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := sdkClient(t, srv, tc.opts)
			_, err := c.PostToConnection(ctxT(t), &apigatewaymanagementapi.PostToConnectionInput{
				ConnectionId: aws.String(victim), Data: []byte("signed message")})
			var forbidden *types.ForbiddenException
			if !errors.As(err, &forbidden) {
				t.Fatalf("err = %v, want ForbiddenException", err)
			}
		})
	}
	if got := append(f.messages(victim), f.messages(other)...); len(got) != 0 {
		t.Fatalf("messages delivered despite 403: %+v", got)
	}
}

func TestSigV4ClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{16 * time.Minute, -16 * time.Minute} {
		f := newFake()
		a, _ := newTestAPI(t, sigV4Config(), f)
		a.now = func() time.Time { return time.Now().Add(skew) } // the server's clock is off, i.e. the request is stale
		srv := serve(t, a)
		id := f.add(conn.Info{})
		c := sdkClient(t, srv, sdkOpts{creds: staticCreds(testKeyID, testSecret)})
		_, err := c.PostToConnection(ctxT(t), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("x")})
		var forbidden *types.ForbiddenException
		if !errors.As(err, &forbidden) {
			t.Fatalf("skew %v: err = %v, want ForbiddenException", skew, err)
		}
	}
	// Within the window it passes.
	f := newFake()
	a, _ := newTestAPI(t, sigV4Config(), f)
	a.now = func() time.Time { return time.Now().Add(10 * time.Minute) }
	srv := serve(t, a)
	id := f.add(conn.Info{})
	c := sdkClient(t, srv, sdkOpts{creds: staticCreds(testKeyID, testSecret)})
	if _, err := c.PostToConnection(ctxT(t), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("x")}); err != nil {
		t.Fatalf("10 minutes of skew: %v", err)
	}
}

func TestSigV4Region(t *testing.T) {
	f := newFake()
	cfg := sigV4Config()
	cfg.Auth.Region = "us-east-1"
	a, _ := newTestAPI(t, cfg, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	ctx := ctxT(t)
	in := &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("x")}

	_, err := sdkClient(t, srv, sdkOpts{creds: staticCreds(testKeyID, testSecret), region: "eu-west-1"}).PostToConnection(ctx, in)
	var forbidden *types.ForbiddenException
	if !errors.As(err, &forbidden) {
		t.Fatalf("other region: err = %v, want ForbiddenException", err)
	}
	if _, err := sdkClient(t, srv, sdkOpts{creds: staticCreds(testKeyID, testSecret), region: "us-east-1"}).PostToConnection(ctx, in); err != nil {
		t.Fatalf("configured region: %v", err)
	}
}

func TestAWSSDKRetriesLimitExceeded(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, sigV4Config(), f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	c := sdkClient(t, srv, sdkOpts{creds: staticCreds(testKeyID, testSecret)})

	// Two "buffer full" answers, then room: the SDK's third attempt succeeds.
	f.failNextPosts(conn.ErrBufferFull, conn.ErrBufferFull)
	if _, err := c.PostToConnection(ctxT(t), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("x")}); err != nil {
		t.Fatalf("PostToConnection with two 429s: %v", err)
	}
	if n := f.posts(); n != 3 {
		t.Fatalf("controller saw %d attempts, want 3 (two retried 429s)", n)
	}
	if got := f.messages(id); len(got) != 1 {
		t.Fatalf("delivered %d messages, want 1", len(got))
	}

	// Always full: the SDK gives up after its attempts with LimitExceededException.
	f.failNextPosts(conn.ErrBufferFull, conn.ErrBufferFull, conn.ErrBufferFull, conn.ErrBufferFull)
	_, err := c.PostToConnection(ctxT(t), &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("y")})
	var limit *types.LimitExceededException
	if !errors.As(err, &limit) {
		t.Fatalf("err = %v, want LimitExceededException", err)
	}
	if n := f.posts(); n != 6 {
		t.Fatalf("controller saw %d attempts in total, want 6", n)
	}
}
