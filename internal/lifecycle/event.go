package lifecycle

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// Pair is one header or query parameter, in the order the client sent it.
type Pair struct {
	Name  string
	Value string
}

// ConnMeta is what the edge knows about a connection; it is the input of
// every event. The edge fills it during the handshake and keeps it for the
// connection's life; the fields from Path on are only read for CONNECT.
type ConnMeta struct {
	ID          string    // connection ID (conn.NewID)
	NodeID      string    // owning node; Config.NodeID if empty
	ConnectedAt time.Time // when the upgrade request arrived
	SourceIP    string
	UserAgent   string
	UserID      string          // from the $connect decision; "" if none
	Principal   json.RawMessage // authorizer object from the decision: valid JSON, or empty
	Groups      []string        // initial groups from the decision
	Stage       string          // Config.Stage if empty
	DomainName  string          // Host the client connected to; Config.DomainName if empty

	Path         string   // request path of the upgrade request
	Headers      []Pair   // request headers, multi-valued, in order
	Query        []Pair   // query parameters, multi-valued, in order
	Subprotocols []string // offered in Sec-WebSocket-Protocol
}

// HeadersFromHTTP flattens an http.Header into pairs: names sorted (a map
// has no order), each name's values in order.
func HeadersFromHTTP(h http.Header) []Pair {
	names := make([]string, 0, len(h))
	n := 0
	for k, vs := range h {
		names = append(names, k)
		n += len(vs)
	}
	slices.Sort(names)
	out := make([]Pair, 0, n)
	for _, k := range names {
		for _, v := range h[k] {
			out = append(out, Pair{Name: k, Value: v})
		}
	}
	return out
}

// ParseQuery splits a raw query string into pairs in order, unescaping them;
// pairs that fail to unescape are kept raw (the backend decides).
func ParseQuery(raw string) []Pair {
	var out []Pair
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		out = append(out, Pair{Name: unescapeQuery(k), Value: unescapeQuery(v)})
	}
	return out
}

func unescapeQuery(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// eventSpec is what varies between events of one connection.
type eventSpec struct {
	typ      string // protocol.EventConnect, protocol.EventMessage, protocol.EventDisconnect
	routeKey string
	id       string // event ID: requestId, extendedRequestId, messageId, Nats-Msg-Id
	now      time.Time
	body     []byte        // MESSAGE
	binary   bool          // MESSAGE: body is base64
	code     int           // DISCONNECT
	reason   string        // DISCONNECT
	away     time.Duration // RESUME: how long the connection was detached
}

// defaults fills what ConnMeta may leave empty.
type defaults struct {
	nodeID, stage, domain, apiID string
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// clfLayout is the Common Log Format API Gateway uses for requestTime.
const clfLayout = "02/Jan/2006:15:04:05 -0700"

// appendEvent appends the JSON body of an event to dst. The shape is
// events.APIGatewayWebsocketProxyRequest (aws-lambda-go) with the
// requestContext.switchboard extension; see docs/protocol.md. Hand-rolled
// because it runs for every message: one pass, no reflection, no maps.
func appendEvent(dst []byte, d *defaults, m *ConnMeta, e *eventSpec) []byte {
	b := append(dst, `{"requestContext":{"routeKey":`...)
	b = appendString(b, e.routeKey)
	b = append(b, `,"eventType":"`...)
	b = append(b, e.typ...)
	b = append(b, `","connectionId":`...)
	b = appendString(b, m.ID)
	b = append(b, `,"connectedAt":`...)
	b = strconv.AppendInt(b, m.ConnectedAt.UnixMilli(), 10)
	b = append(b, `,"requestTime":"`...)
	b = e.now.UTC().AppendFormat(b, clfLayout)
	b = append(b, `","requestTimeEpoch":`...)
	b = strconv.AppendInt(b, e.now.UnixMilli(), 10)
	b = append(b, `,"requestId":"`...)
	b = append(b, e.id...) // event IDs are nuids: no escaping needed
	b = append(b, `","extendedRequestId":"`...)
	b = append(b, e.id...)
	if e.typ == protocol.EventMessage {
		b = append(b, `","messageId":"`...)
		b = append(b, e.id...)
	}
	b = append(b, `","messageDirection":"IN","identity":{"sourceIp":`...)
	b = appendString(b, m.SourceIP)
	b = append(b, `,"userAgent":`...)
	b = appendString(b, m.UserAgent)
	b = append(b, `},"stage":`...)
	b = appendString(b, or(m.Stage, d.stage))
	b = append(b, `,"domainName":`...)
	b = appendString(b, or(m.DomainName, d.domain))
	b = append(b, `,"apiId":`...)
	b = appendString(b, d.apiID)
	if len(m.Principal) > 0 {
		b = append(b, `,"authorizer":`...)
		b = append(b, m.Principal...)
	}
	if e.typ == protocol.EventDisconnect {
		b = append(b, `,"disconnectStatusCode":`...)
		b = strconv.AppendInt(b, int64(e.code), 10)
		b = append(b, `,"disconnectReason":`...)
		b = appendString(b, e.reason)
	}
	b = append(b, `,"switchboard":{"version":`...)
	b = strconv.AppendInt(b, protocol.Version, 10)
	b = append(b, `,"eventId":"`...)
	b = append(b, e.id...)
	b = append(b, `","nodeId":`...)
	b = appendString(b, or(m.NodeID, d.nodeID))
	if m.UserID != "" {
		b = append(b, `,"userId":`...)
		b = appendString(b, m.UserID)
	}
	if len(m.Groups) > 0 {
		b = append(b, `,"groups":`...)
		b = appendStrings(b, m.Groups)
	}
	if e.typ == protocol.EventResume {
		b = append(b, `,"detachedMs":`...)
		b = strconv.AppendInt(b, e.away.Milliseconds(), 10)
	}
	if e.typ == protocol.EventConnect && len(m.Subprotocols) > 0 {
		b = append(b, `,"subprotocols":`...)
		b = appendStrings(b, m.Subprotocols)
	}
	b = append(b, `}}`...)

	if e.typ == protocol.EventConnect {
		if m.Path != "" {
			b = append(b, `,"path":`...)
			b = appendString(b, m.Path)
		}
		if len(m.Headers) > 0 {
			b = append(b, `,"headers":`...)
			b = appendPairs(b, m.Headers, false, true)
			b = append(b, `,"multiValueHeaders":`...)
			b = appendPairs(b, m.Headers, true, true)
		}
		if len(m.Query) > 0 {
			b = append(b, `,"queryStringParameters":`...)
			b = appendPairs(b, m.Query, false, false)
			b = append(b, `,"multiValueQueryStringParameters":`...)
			b = appendPairs(b, m.Query, true, false)
		}
	}
	if e.typ == protocol.EventMessage && len(e.body) > 0 {
		b = append(b, `,"body":`...)
		if e.binary {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, e.body)
			b = append(b, '"')
		} else {
			b = appendBytesString(b, e.body)
		}
	}
	b = append(b, `,"isBase64Encoded":`...)
	b = strconv.AppendBool(b, e.typ == protocol.EventMessage && e.binary && len(e.body) > 0)
	return append(b, '}')
}

// appendPairs writes pairs as a JSON object: each distinct name once, in
// order of first appearance, with its last value (API Gateway's "headers")
// or all its values (multiValue...). Header names group case-insensitively
// under their first spelling; query names are case-sensitive. Quadratic in
// the number of pairs, which the edge bounds; it allocates nothing.
func appendPairs(b []byte, ps []Pair, multi, fold bool) []byte {
	eq := func(a, c string) bool {
		if fold {
			return strings.EqualFold(a, c)
		}
		return a == c
	}
	b = append(b, '{')
	first := true
	for i, p := range ps {
		seen := false
		for _, q := range ps[:i] {
			if eq(q.Name, p.Name) {
				seen = true
				break
			}
		}
		if seen {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, p.Name)
		b = append(b, ':')
		if multi {
			b = append(b, '[')
			n := 0
			for _, q := range ps[i:] {
				if eq(q.Name, p.Name) {
					if n > 0 {
						b = append(b, ',')
					}
					b = appendString(b, q.Value)
					n++
				}
			}
			b = append(b, ']')
			continue
		}
		last := p.Value
		for _, q := range ps[i+1:] {
			if eq(q.Name, p.Name) {
				last = q.Value
			}
		}
		b = appendString(b, last)
	}
	return append(b, '}')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD and
// U+2028/U+2029 are escaped, as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendBytesString is appendString for a []byte without a copy.
func appendBytesString(b []byte, s []byte) []byte {
	return appendString(b, unsafeString(s))
}

// unsafeString views b as a string for reading only; b is not modified
// while the string is in use.
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
