package lifecycle

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/switchboardgw/switchboard/internal/rules"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// Decision is the outcome of $connect.
type Decision struct {
	// Allow: complete the upgrade. Otherwise answer Status and close.
	Allow bool
	// Status is the HTTP status to answer when !Allow (≥ 300).
	Status int
	// Header holds headers to add to the 101 response (e.g.
	// Sec-WebSocket-Protocol) or to the rejection.
	Header http.Header
	// Body is the rejection's body (deny only).
	Body []byte
	// Principal is the authorizer object ({"principalId":…, context…}) to
	// store in ConnMeta.Principal; valid JSON or empty.
	Principal json.RawMessage
	// UserID and Groups are the connection's user and initial groups, both
	// checked with ValidName.
	UserID string
	Groups []string
	// Reason says why, for logs: "allowed", "denied", "skipped", or the
	// integration failure ("timeout", "no_responders", "bad_reply: …",
	// "unavailable: …").
	Reason string
}

var errBadReply = errors.New("bad $connect reply")

// droppedHeaders are never copied from a reply: the edge owns the upgrade.
var droppedHeaders = map[string]bool{
	"Connection": true, "Upgrade": true, "Sec-Websocket-Accept": true,
	"Sec-Websocket-Extensions": true, "Content-Length": true, "Transfer-Encoding": true,
}

// parseReply turns a reply body into a Decision. An empty body or JSON null
// is a bare allow (a responder may simply acknowledge).
func parseReply(data []byte, maxPrincipal, maxGroups int) (Decision, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return Decision{Allow: true, Reason: "allowed"}, nil
	}
	var r protocol.ConnectReply
	if err := json.Unmarshal(data, &r); err != nil {
		return Decision{}, fmt.Errorf("%w: %w", errBadReply, err)
	}
	d := Decision{Allow: true, Reason: "allowed"}
	switch {
	case r.StatusCode == 0 || (r.StatusCode >= 200 && r.StatusCode < 300):
	case r.StatusCode >= 300 && r.StatusCode <= 599:
		d = Decision{Status: r.StatusCode, Reason: "denied"}
	default:
		return Decision{}, fmt.Errorf("%w: statusCode %d", errBadReply, r.StatusCode)
	}
	h := http.Header{}
	add := func(k, v string) error {
		if !validHeaderName(k) || !validHeaderValue(v) {
			return fmt.Errorf("%w: header %q", errBadReply, k)
		}
		if !droppedHeaders[http.CanonicalHeaderKey(k)] {
			h.Add(k, v)
		}
		return nil
	}
	for k, vs := range r.MultiValueHeaders {
		for _, v := range vs {
			if err := add(k, v); err != nil {
				return Decision{}, err
			}
		}
	}
	for k, v := range r.Headers {
		if _, dup := r.MultiValueHeaders[k]; dup {
			continue // as API Gateway: multiValueHeaders win
		}
		if err := add(k, v); err != nil {
			return Decision{}, err
		}
	}
	if len(h) > 0 {
		d.Header = h
	}
	if !d.Allow {
		if r.IsBase64Encoded {
			b, err := base64.StdEncoding.DecodeString(r.Body)
			if err != nil {
				return Decision{}, fmt.Errorf("%w: body: %w", errBadReply, err)
			}
			d.Body = b
		} else if r.Body != "" {
			d.Body = []byte(r.Body)
		}
		return d, nil
	}
	p, err := buildPrincipal(r.PrincipalID, r.Context, maxPrincipal)
	if err != nil {
		return Decision{}, err
	}
	d.Principal = p
	if r.UserID != "" {
		if !rules.ValidName(r.UserID) {
			return Decision{}, fmt.Errorf("%w: userId %q", errBadReply, r.UserID)
		}
		d.UserID = r.UserID
	}
	if len(r.Groups) > maxGroups {
		return Decision{}, fmt.Errorf("%w: %d groups (max %d)", errBadReply, len(r.Groups), maxGroups)
	}
	for _, g := range r.Groups {
		if !rules.ValidName(g) {
			return Decision{}, fmt.Errorf("%w: group %q", errBadReply, g)
		}
	}
	d.Groups = r.Groups
	return d, nil
}

// buildPrincipal makes API Gateway's authorizer object: principalId plus the
// members of context, flattened into one JSON object.
func buildPrincipal(id string, ctx json.RawMessage, max int) (json.RawMessage, error) {
	ctx = bytes.TrimSpace(ctx)
	if string(ctx) == "null" {
		ctx = nil
	}
	if id == "" && len(ctx) == 0 {
		return nil, nil
	}
	var inner []byte
	if len(ctx) > 0 {
		if ctx[0] != '{' {
			return nil, fmt.Errorf("%w: context must be a JSON object", errBadReply)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, ctx); err != nil {
			return nil, fmt.Errorf("%w: context: %w", errBadReply, err)
		}
		inner = bytes.TrimSpace(c.Bytes()[1 : c.Len()-1])
	}
	b := []byte{'{'}
	if id != "" {
		b = append(b, `"principalId":`...)
		b = appendString(b, id)
		if len(inner) > 0 {
			b = append(b, ',')
		}
	}
	b = append(b, inner...)
	b = append(b, '}')
	if len(b) > max {
		return nil, fmt.Errorf("%w: principal/context is %d bytes (max %d)", errBadReply, len(b), max)
	}
	return b, nil
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
