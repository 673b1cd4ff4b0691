// Package protocol is the wire contract between Switchboard's edge and its
// backends over NATS (protocol v1, docs/protocol.md): the subjects, the
// header names, the route-key-to-token rule, the JSON of an event's
// Switchboard extension and of the $connect reply. The edge
// (internal/lifecycle) and the backend SDK (pkg/backend) both build on this
// package, so the two sides cannot drift apart.
//
// It is public because the contract is: backends in other modules import
// pkg/backend, which re-exports what they need from here, and a backend that
// speaks NATS directly can use the names without the SDK.
package protocol

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/aws/aws-lambda-go/events"

	"github.com/switchboardgw/switchboard/internal/rules"
)

// Version is the protocol version, sent as requestContext.switchboard.version
// and in the Switchboard-Version header.
const Version = 1

// NATS headers. The first four are set by the gateway on every event and
// request; the last three by either side on replies and one-way messages.
const (
	HeaderMsgID   = "Nats-Msg-Id"               // event ID; JetStream dedupes on it
	HeaderConnID  = "Switchboard-Connection-Id" // lets a backend shard by connection without decoding
	HeaderVersion = "Switchboard-Version"       // protocol version
	HeaderAttempt = "Switchboard-Attempt"       // JetStream republish count, absent on the first try
	// HeaderBinary "true" on a two-way reply sends it as a binary frame
	// (default text).
	HeaderBinary = "Switchboard-Binary"
	// HeaderError on a two-way reply: the backend failed; the client gets
	// the gateway's error frame and the reply body is not sent.
	HeaderError = "Switchboard-Error"
	// HeaderOneWay "true" on a MESSAGE event that carries a reply subject
	// only so that NATS reports when nobody subscribes: it expects no reply
	// (a reply is ignored).
	HeaderOneWay = "Switchboard-One-Way"
)

// Event types (requestContext.eventType).
const (
	EventConnect    = "CONNECT"
	EventMessage    = "MESSAGE"
	EventDisconnect = "DISCONNECT"
	// EventResume: a detached connection was resumed by its client
	// (docs/resume.md); no DISCONNECT or CONNECT was sent for the gap.
	EventResume = "RESUME"
)

// Predefined route keys.
const (
	RouteConnect    = "$connect"
	RouteDisconnect = "$disconnect"
	RouteResume     = "$resume" // RESUME events; not a route a backend declares
	RouteDefault    = "$default"
)

// DefaultToken is the subject token of the $default route: "$" is legal in a
// subject but reserved by convention for system subjects ($JS, $SYS), so
// $default travels as <prefix>.route._default.
const DefaultToken = "_default"

// MaxRouteKey is the default bound of a custom route key, in bytes.
const MaxRouteKey = rules.MaxName

// ValidRouteKey reports whether key may be a custom route key of at most max
// bytes: a legal subject token (rules.ValidToken) that does not start with
// '$' (API Gateway reserves those for predefined routes) and is not
// DefaultToken (which would alias $default).
func ValidRouteKey(key string, max int) bool {
	return rules.ValidToken(key, max) && key[0] != '$' && key != DefaultToken
}

// RouteToken returns the subject token of a route key: DefaultToken for
// $default, the key itself for a legal custom key (at most MaxRouteKey
// bytes), "" otherwise.
func RouteToken(key string) string {
	if key == RouteDefault {
		return DefaultToken
	}
	if !ValidRouteKey(key, MaxRouteKey) {
		return ""
	}
	return key
}

// DefaultPrefix is the subject prefix when none is configured.
const DefaultPrefix = "switchboard"

// CheckPrefix returns nil if p may be the subject prefix: dot-separated
// tokens of [A-Za-z0-9_-] (rules.CheckSubjectPrefix).
func CheckPrefix(p string) error { return rules.CheckSubjectPrefix(p) }

// Subject suffixes: every subject is <prefix>.<suffix>.
const (
	SuffixConnect         = "connect"          // $connect requests
	SuffixEventConnect    = "event.connect"    // CONNECT events
	SuffixEventDisconnect = "event.disconnect" // DISCONNECT events
	SuffixEventResume     = "event.resume"     // RESUME events
	SuffixEvents          = "event.>"          // all three
	SuffixRoute           = "route."           // + a route's token (RouteToken)
	SuffixAllRoutes       = SuffixRoute + ">"  // every route
)

// Subjects are the subjects of one deployment (one prefix).
type Subjects struct {
	Connect         string // $connect requests: <prefix>.connect
	EventConnect    string // CONNECT events: <prefix>.event.connect
	EventDisconnect string // DISCONNECT events: <prefix>.event.disconnect
	EventResume     string // RESUME events: <prefix>.event.resume
	Events          string // all three, for a JetStream stream: <prefix>.event.>
	RoutePrefix     string // a route's subject is RoutePrefix + its token: <prefix>.route.
}

// NewSubjects returns the subjects under prefix.
func NewSubjects(prefix string) Subjects {
	return Subjects{
		Connect:         prefix + "." + SuffixConnect,
		EventConnect:    prefix + "." + SuffixEventConnect,
		EventDisconnect: prefix + "." + SuffixEventDisconnect,
		EventResume:     prefix + "." + SuffixEventResume,
		Events:          prefix + "." + SuffixEvents,
		RoutePrefix:     prefix + "." + SuffixRoute,
	}
}

// Route is the subject of the route with token tok (see RouteToken).
func (s Subjects) Route(tok string) string { return s.RoutePrefix + tok }

// Extension is requestContext.switchboard, Switchboard's additions to the
// API Gateway event.
type Extension struct {
	Version      int      `json:"version"`
	EventID      string   `json:"eventId"`
	NodeID       string   `json:"nodeId"`
	UserID       string   `json:"userId,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	Subprotocols []string `json:"subprotocols,omitempty"`
	// DetachedMs is, on RESUME, how long the connection was detached.
	DetachedMs int64 `json:"detachedMs,omitempty"`
}

// Event is an event as a backend decodes it: the API Gateway WebSocket event
// as aws-lambda-go types it, plus the extension.
type Event struct {
	events.APIGatewayWebsocketProxyRequest
	Switchboard Extension
}

// wireEvent decodes an event and its extension in one pass.
type wireEvent struct {
	events.APIGatewayWebsocketProxyRequest
	RequestContext struct {
		events.APIGatewayWebsocketProxyRequestContext
		Switchboard Extension `json:"switchboard"`
	} `json:"requestContext"`
}

// DecodeEvent decodes the JSON body of an event.
func DecodeEvent(data []byte) (Event, error) {
	var w wireEvent
	if err := json.Unmarshal(data, &w); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	e := Event{APIGatewayWebsocketProxyRequest: w.APIGatewayWebsocketProxyRequest, Switchboard: w.RequestContext.Switchboard}
	e.RequestContext = w.RequestContext.APIGatewayWebsocketProxyRequestContext
	return e, nil
}

// ConnectReply is the body of a $connect reply: an
// events.APIGatewayProxyResponse (what a Lambda returns) plus Switchboard's
// extensions. An empty body or JSON null is a bare allow.
type ConnectReply struct {
	// StatusCode ≥ 300 rejects the upgrade with that HTTP status; 0 or 2xx
	// allows.
	StatusCode int `json:"statusCode,omitempty"`
	// Headers and MultiValueHeaders are added to the 101 or the rejection
	// (multiValueHeaders win on a name in both).
	Headers           map[string]string   `json:"headers,omitempty"`
	MultiValueHeaders map[string][]string `json:"multiValueHeaders,omitempty"`
	// Body is the rejection's body, base64 if IsBase64Encoded.
	Body            string `json:"body,omitempty"`
	IsBase64Encoded bool   `json:"isBase64Encoded,omitempty"`
	// PrincipalID and Context (a JSON object) become requestContext.authorizer
	// on every later event of the connection.
	PrincipalID string          `json:"principalId,omitempty"`
	Context     json.RawMessage `json:"context,omitempty"`
	// UserID and Groups: the connection's user and initial groups
	// (rules.ValidName each).
	UserID string   `json:"userId,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

// MaxErrorText bounds the Switchboard-Error header value, in bytes.
const MaxErrorText = 200

// ErrorText makes msg a Switchboard-Error header value: at most
// MaxErrorText bytes, control characters replaced by spaces (a header value
// is one line).
func ErrorText(msg string) string {
	if len(msg) > MaxErrorText {
		msg = msg[:MaxErrorText]
	}
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return ' '
		}
		return c
	}, msg)
}
