// Package connections is a small Go client for Switchboard's @connections
// API: send to, inspect and close WebSocket connections by ID, with bearer
// token authentication. (The AWS SDK's apigatewaymanagementapi client works
// against the same endpoint too; this client adds Switchboard's extensions:
// binary frames, close code and reason, existence checks.)
package connections

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Errors returned (wrapped in *Error) for the API's error responses; match
// them with errors.Is.
var (
	ErrGone          = errors.New("connections: connection gone")              // 410
	ErrForbidden     = errors.New("connections: forbidden")                    // 403
	ErrTooLarge      = errors.New("connections: message too large")            // 413
	ErrLimitExceeded = errors.New("connections: client send buffer full")      // 429: retry later
	ErrBadRequest    = errors.New("connections: bad request")                  // 400
	ErrUnavailable   = errors.New("connections: connection owner unavailable") // 5xx
)

// Error is an error response from the API.
type Error struct {
	StatusCode int    // HTTP status
	Code       string // AWS-style error code, e.g. "GoneException"
	Message    string
	RequestID  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("connections: %d %s: %s (request %s)", e.StatusCode, e.Code, e.Message, e.RequestID)
}

// Is matches the package's sentinel errors by status code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrGone:
		return e.StatusCode == http.StatusGone
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrTooLarge:
		return e.StatusCode == http.StatusRequestEntityTooLarge
	case ErrLimitExceeded:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrBadRequest:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnavailable:
		return e.StatusCode >= 500
	}
	return false
}

// Options configure a Client.
type Options struct {
	// Token is sent as "Authorization: Bearer <Token>". Default "" (none).
	Token string
	// HTTPClient performs the requests. Default: a client with a 30s timeout.
	HTTPClient *http.Client
}

// Client calls one @connections endpoint. It is safe for concurrent use.
type Client struct {
	base  string // endpoint without a trailing slash
	token string
	http  *http.Client
}

// New returns a client for endpoint, the URL the API is served at including
// any stage prefix, e.g. "http://router:8081" or "https://ws.example.com/prod".
func New(endpoint string, opts Options) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("connections: endpoint: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("connections: endpoint %q: want http(s)://host[:port][/stage]", endpoint)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("connections: endpoint %q: no query or fragment allowed", endpoint)
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimRight(endpoint, "/"), token: opts.Token, http: hc}, nil
}

// Post sends data as one message: a text frame if data is valid UTF-8, else
// a binary frame.
func (c *Client) Post(ctx context.Context, id string, data []byte) error {
	return c.post(ctx, id, data, "")
}

// PostText sends data as a text frame; it must be valid UTF-8.
func (c *Client) PostText(ctx context.Context, id string, data []byte) error {
	return c.post(ctx, id, data, "text")
}

// PostBinary sends data as a binary frame.
func (c *Client) PostBinary(ctx context.Context, id string, data []byte) error {
	return c.post(ctx, id, data, "binary")
}

func (c *Client) post(ctx context.Context, id string, data []byte, frame string) error {
	h := http.Header{}
	if frame != "" {
		h.Set("X-Switchboard-Frame", frame)
	}
	if frame == "binary" {
		h.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.do(ctx, http.MethodPost, c.connURL(id, nil), h, data)
	if err != nil {
		return err
	}
	return drain(resp)
}

// Connection is what Get reports.
type Connection struct {
	ID           string
	NodeID       string
	UserID       string
	ConnectedAt  time.Time
	LastActiveAt time.Time
	SourceIP     string
	UserAgent    string
	// Detached: a resumable connection whose client is away, within its
	// resume window (docs/resume.md); posts to it are kept for it.
	Detached bool
}

// Get reports a connection; ErrGone if it does not exist.
func (c *Client) Get(ctx context.Context, id string) (Connection, error) {
	resp, err := c.do(ctx, http.MethodGet, c.connURL(id, nil), nil, nil)
	if err != nil {
		return Connection{}, err
	}
	defer resp.Body.Close()
	var out struct {
		ConnectedAt  time.Time `json:"connectedAt"`
		LastActiveAt time.Time `json:"lastActiveAt"`
		Identity     struct {
			SourceIP  string `json:"sourceIp"`
			UserAgent string `json:"userAgent"`
		} `json:"identity"`
		ConnectionID string `json:"connectionId"`
		NodeID       string `json:"nodeId"`
		UserID       string `json:"userId"`
		Detached     bool   `json:"detached"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return Connection{}, fmt.Errorf("connections: decode GET response: %w", err)
	}
	if out.ConnectionID == "" {
		out.ConnectionID = id
	}
	return Connection{
		ID: out.ConnectionID, NodeID: out.NodeID, UserID: out.UserID,
		ConnectedAt: out.ConnectedAt, LastActiveAt: out.LastActiveAt,
		SourceIP: out.Identity.SourceIP, UserAgent: out.Identity.UserAgent, Detached: out.Detached,
	}, nil
}

// Exists reports whether the connection is live (HEAD: 200 or 410).
func (c *Client) Exists(ctx context.Context, id string) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, c.connURL(id, nil), nil, nil)
	if errors.Is(err, ErrGone) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, drain(resp)
}

// Delete closes the connection. code 0 means the default, 1000 with reason
// "Connection Closed Normally"; otherwise code must be 1000-1003, 1007-1014
// or 3000-4999 and reason at most 123 bytes.
func (c *Client) Delete(ctx context.Context, id string, code int, reason string) error {
	q := url.Values{}
	if code != 0 {
		q.Set("code", strconv.Itoa(code))
	}
	if reason != "" {
		q.Set("reason", reason)
	}
	resp, err := c.do(ctx, http.MethodDelete, c.connURL(id, q), nil, nil)
	if err != nil {
		return err
	}
	return drain(resp)
}

// Message is one message of a batch: Data is sent as a text frame, or as a
// binary frame if Binary.
type Message struct {
	ConnectionID string
	Data         []byte
	Binary       bool
}

// Result is the outcome of one batch message; Err is nil on success and
// matches the package's errors otherwise.
type Result struct {
	ConnectionID string
	Err          error
}

// PostBatch sends many messages in one call (Switchboard's batch
// extension). The error is non-nil only if the call as a whole failed.
func (c *Client) PostBatch(ctx context.Context, msgs []Message) ([]Result, error) {
	type item struct {
		ConnectionID string  `json:"connectionId"`
		Data         *string `json:"data,omitempty"`
		DataBase64   []byte  `json:"dataBase64,omitempty"` // encoding/json writes []byte as base64
	}
	items := make([]item, len(msgs))
	for i, m := range msgs {
		items[i].ConnectionID = m.ConnectionID
		if m.Binary {
			items[i].DataBase64 = m.Data
		} else {
			s := string(m.Data)
			items[i].Data = &s
		}
	}
	body, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("connections: encode batch: %w", err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	resp, err := c.do(ctx, http.MethodPost, c.base+"/@connections", h, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			ConnectionID string `json:"connectionId"`
			StatusCode   int    `json:"statusCode"`
			ErrorType    string `json:"errorType"`
			Message      string `json:"message"`
		} `json:"results"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("connections: decode batch response: %w", err)
	}
	res := make([]Result, len(out.Results))
	for i, r := range out.Results {
		res[i].ConnectionID = r.ConnectionID
		if r.StatusCode >= 300 {
			res[i].Err = &Error{StatusCode: r.StatusCode, Code: r.ErrorType, Message: r.Message, RequestID: resp.Header.Get("X-Amzn-RequestId")}
		}
	}
	return res, nil
}

func (c *Client) connURL(id string, q url.Values) string {
	u := c.base + "/@connections/" + url.PathEscape(id)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// do performs the request and turns an error response into *Error. On
// success the caller owns resp.Body.
func (c *Client) do(ctx context.Context, method, u string, h http.Header, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("connections: %w", err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("connections: %s: %w", method, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &Error{StatusCode: resp.StatusCode, Code: resp.Header.Get("X-Amzn-ErrorType"), RequestID: resp.Header.Get("X-Amzn-RequestId")}
	var eb struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&eb) == nil {
		e.Message = eb.Message
		if e.Code == "" {
			e.Code = eb.Type
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return nil, e
}

func drain(resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.Body.Close()
}

// Endpoint returns the endpoint the client calls, without a trailing slash.
func (c *Client) Endpoint() string { return c.base }
