package baseline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// The connect call is what a team writing its own gorilla server with an
// authorisation backend would add: one HTTP POST per connection before the
// upgrade. Its request and answer have the shape of Centrifugo's HTTP
// connect proxy, so that the benchmarks' connectd answers it as it answers
// Centrifugo, and the two systems pay for the same round trip.

// connectTimeout bounds one connect call: the timeout the peers benchmark
// gives Centrifugo's connect proxy.
const connectTimeout = 5 * time.Second

// connectIdleConns are the idle keep-alive connections kept to the
// backend: the benchmark's 512 handshakes in flight (two load processes of
// 256) each reuse one instead of dialling, as the proxy's pool would.
const connectIdleConns = 512

// errDenied: the backend answered, and not with an allow.
var errDenied = errors.New("baseline: connection denied by the backend")

// connectRequest is the body of a connect call: the fields Centrifugo's
// connect proxy sends for a WebSocket client of its JSON protocol.
type connectRequest struct {
	Client    string `json:"client"`
	Transport string `json:"transport"`
	Protocol  string `json:"protocol"`
	Encoding  string `json:"encoding"`
}

// connectReply is the backend's answer: a result allows the connection; an
// error or a disconnect refuses it.
type connectReply struct {
	Result *struct {
		User string `json:"user"`
	} `json:"result"`
	Error *struct {
		Code    uint32 `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Disconnect *struct {
		Code   uint32 `json:"code"`
		Reason string `json:"reason"`
	} `json:"disconnect"`
}

// authorizer makes the connect calls.
type authorizer struct {
	url    string
	client *http.Client
	ids    atomic.Uint64 // the client IDs the requests carry
}

func newAuthorizer(url string) *authorizer {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = connectIdleConns
	tr.MaxIdleConnsPerHost = connectIdleConns
	return &authorizer{url: url, client: &http.Client{Transport: tr, Timeout: connectTimeout}}
}

// allow asks the backend whether a connection may open. It returns nil for
// an allow, an error wrapping errDenied for a refusal, and any other error
// when the backend could not be asked or answered something else than a
// connect reply (a non-2xx status, a body that is not one).
func (a *authorizer) allow(ctx context.Context) error {
	body, err := json.Marshal(connectRequest{
		Client:    strconv.FormatUint(a.ids.Add(1), 10),
		Transport: "websocket",
		Protocol:  "json",
		Encoding:  "json",
	})
	if err != nil {
		return fmt.Errorf("baseline: connect request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("baseline: connect request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("baseline: connect call: %w", err)
	}
	defer resp.Body.Close()
	// Read to the end, so that the connection goes back to the pool.
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("baseline: connect answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("baseline: connect answer: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var r connectReply
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("baseline: connect answer %q: %w", bytes.TrimSpace(b), err)
	}
	switch {
	case r.Error != nil:
		return fmt.Errorf("%w: error %d %s", errDenied, r.Error.Code, r.Error.Message)
	case r.Disconnect != nil:
		return fmt.Errorf("%w: disconnect %d %s", errDenied, r.Disconnect.Code, r.Disconnect.Reason)
	case r.Result == nil:
		return fmt.Errorf("%w: no result in %q", errDenied, bytes.TrimSpace(b))
	}
	return nil
}

// close drops the idle connections to the backend.
func (a *authorizer) close() { a.client.CloseIdleConnections() }
