package lifecycle

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// decodeExt decodes requestContext.switchboard with the shared contract
// (pkg/protocol), as a backend does.
func decodeExt(t testing.TB, data []byte) protocol.Extension {
	t.Helper()
	e, err := protocol.DecodeEvent(data)
	if err != nil {
		t.Fatalf("decode extension: %v\n%s", err, data)
	}
	return e.Switchboard
}

func decodeAWS(t testing.TB, data []byte) events.APIGatewayWebsocketProxyRequest {
	t.Helper()
	var ev events.APIGatewayWebsocketProxyRequest
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatalf("decode into aws-lambda-go type: %v\n%s", err, data)
	}
	return ev
}

var testDefaults = defaults{nodeID: "node-1", stage: "prod", domain: "ws.example.com", apiID: "switchboard"}

func sampleMeta() *ConnMeta {
	return &ConnMeta{
		ID:          "AAAAAAAAAAAAAAAA",
		ConnectedAt: time.UnixMilli(1700000000123),
		SourceIP:    "203.0.113.9",
		UserAgent:   "test-agent/1.0 \"quoted\"",
		UserID:      "alice",
		Principal:   json.RawMessage(`{"principalId":"alice","role":"admin"}`),
		Groups:      []string{"room-1", "room-2"},
		Path:        "/ws",
		Headers: []Pair{
			{"Host", "ws.example.com"}, {"X-Multi", "a"}, {"Sec-WebSocket-Protocol", "chat, json"}, {"x-multi", "b"},
		},
		Query:        []Pair{{"token", "t1"}, {"room", "1"}, {"room", "2"}},
		Subprotocols: []string{"chat", "json"},
	}
}

func TestConnectEventDecodesIntoAWSLambdaType(t *testing.T) {
	now := time.Date(2024, 1, 20, 11, 55, 8, 0, time.UTC)
	data := appendEvent(nil, &testDefaults, sampleMeta(), &eventSpec{typ: protocol.EventConnect, routeKey: protocol.RouteConnect, id: "EVT1", now: now})
	ev := decodeAWS(t, data)
	rc := ev.RequestContext
	want := events.APIGatewayWebsocketProxyRequestContext{
		RouteKey: "$connect", EventType: "CONNECT", ConnectionID: "AAAAAAAAAAAAAAAA",
		ConnectedAt: 1700000000123, RequestTime: "20/Jan/2024:11:55:08 +0000", RequestTimeEpoch: now.UnixMilli(),
		RequestID: "EVT1", ExtendedRequestID: "EVT1", MessageDirection: "IN",
		Identity: events.APIGatewayRequestIdentity{SourceIP: "203.0.113.9", UserAgent: "test-agent/1.0 \"quoted\""},
		Stage:    "prod", DomainName: "ws.example.com", APIID: "switchboard",
		Authorizer: map[string]any{"principalId": "alice", "role": "admin"},
	}
	if !reflect.DeepEqual(rc, want) {
		t.Fatalf("requestContext:\n got %+v\nwant %+v", rc, want)
	}
	if ev.Path != "/ws" {
		t.Errorf("path %q", ev.Path)
	}
	if ev.Headers["X-Multi"] != "b" || !reflect.DeepEqual(ev.MultiValueHeaders["X-Multi"], []string{"a", "b"}) {
		t.Errorf("headers: last value in headers, all in multiValueHeaders: %v %v", ev.Headers, ev.MultiValueHeaders)
	}
	if ev.QueryStringParameters["room"] != "2" || !reflect.DeepEqual(ev.MultiValueQueryStringParameters["room"], []string{"1", "2"}) {
		t.Errorf("query: %v %v", ev.QueryStringParameters, ev.MultiValueQueryStringParameters)
	}
	if ev.Body != "" || ev.IsBase64Encoded {
		t.Errorf("CONNECT has no body: %q %v", ev.Body, ev.IsBase64Encoded)
	}
	if !strings.Contains(string(data), `"isBase64Encoded":false`) {
		t.Errorf("isBase64Encoded must always be serialized: %s", data)
	}
	x := decodeExt(t, data)
	if x.Version != 1 || x.EventID != "EVT1" || x.NodeID != "node-1" || x.UserID != "alice" ||
		!reflect.DeepEqual(x.Groups, []string{"room-1", "room-2"}) || !reflect.DeepEqual(x.Subprotocols, []string{"chat", "json"}) {
		t.Errorf("extension: %+v", x)
	}
}

func TestMessageEventBodyTextAndBinary(t *testing.T) {
	m := sampleMeta()
	text := []byte(`{"action":"send","msg":"héllo \u2028 <b>"}`)
	ev := decodeAWS(t, appendEvent(nil, &testDefaults, m, &eventSpec{typ: protocol.EventMessage, routeKey: "send", id: "M1", now: time.Now(), body: text}))
	if ev.Body != string(text) || ev.IsBase64Encoded {
		t.Fatalf("text body %q base64=%v", ev.Body, ev.IsBase64Encoded)
	}
	if ev.RequestContext.MessageID != "M1" || ev.RequestContext.EventType != "MESSAGE" || ev.RequestContext.RouteKey != "send" {
		t.Fatalf("context %+v", ev.RequestContext)
	}
	if ev.Headers != nil || ev.QueryStringParameters != nil {
		t.Fatalf("MESSAGE carries no headers or query: %v %v", ev.Headers, ev.QueryStringParameters)
	}
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	ev = decodeAWS(t, appendEvent(nil, &testDefaults, m, &eventSpec{typ: protocol.EventMessage, routeKey: "$default", id: "M2", now: time.Now(), body: bin, binary: true}))
	got, err := base64.StdEncoding.DecodeString(ev.Body)
	if err != nil || !ev.IsBase64Encoded || string(got) != string(bin) {
		t.Fatalf("binary body %q base64=%v err=%v", ev.Body, ev.IsBase64Encoded, err)
	}
}

func TestDisconnectEventCarriesCodeReasonAndAuthorizer(t *testing.T) {
	ev := decodeAWS(t, appendEvent(nil, &testDefaults, sampleMeta(), &eventSpec{typ: protocol.EventDisconnect, routeKey: protocol.RouteDisconnect, id: "D1", now: time.Now(), code: 1001, reason: "going away"}))
	rc := ev.RequestContext
	if rc.EventType != "DISCONNECT" || rc.RouteKey != "$disconnect" || rc.DisconnectStatusCode != 1001 ||
		rc.DisconnectReason == nil || *rc.DisconnectReason != "going away" || rc.MessageID != nil {
		t.Fatalf("context %+v", rc)
	}
	if a, ok := rc.Authorizer.(map[string]any); !ok || a["principalId"] != "alice" {
		t.Fatalf("authorizer on DISCONNECT: %#v", rc.Authorizer)
	}
	// An empty reason is still present, as API Gateway sends "".
	data := appendEvent(nil, &testDefaults, sampleMeta(), &eventSpec{typ: protocol.EventDisconnect, routeKey: protocol.RouteDisconnect, id: "D2", now: time.Now(), code: 1006})
	if rc := decodeAWS(t, data).RequestContext; rc.DisconnectReason == nil || *rc.DisconnectReason != "" {
		t.Fatalf("empty reason: %+v", rc)
	}
}

func TestEventStringsEscapeLikeEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "ctl\x00\x01\x1f\n\r\t", "bad\xffutf8\xc3", "sep\u2028\u2029", "日本語 🎉", "<>&"} {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: round trip %q, encoding/json gives %q", s, back, wantBack)
		}
	}
}

func TestHeadersFromHTTP(t *testing.T) {
	got := HeadersFromHTTP(http.Header{"X-B": {"1", "2"}, "Host": {"h"}})
	want := []Pair{{"Host", "h"}, {"X-B", "1"}, {"X-B", "2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestParseQueryKeepsOrderAndRepeats(t *testing.T) {
	got := ParseQuery("a=1&b=x%20y&a=2&&c&d=%zz+e")
	want := []Pair{{"a", "1"}, {"b", "x y"}, {"a", "2"}, {"c", ""}, {"d", "%zz e"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func BenchmarkEncodeMessageEvent(b *testing.B) {
	m := sampleMeta()
	body := []byte(`{"action":"sendmessage","data":"hello, world, this is a typical chat message"}`)
	buf := make([]byte, 0, 2048)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEvent(buf[:0], &testDefaults, m, &eventSpec{typ: protocol.EventMessage, routeKey: "sendmessage", id: "Q8tVxT6MuwQn8Gtv0y6Imx", now: now, body: body})
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkEncodeConnectEvent(b *testing.B) {
	m := sampleMeta()
	buf := make([]byte, 0, 2048)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEvent(buf[:0], &testDefaults, m, &eventSpec{typ: protocol.EventConnect, routeKey: protocol.RouteConnect, id: "Q8tVxT6MuwQn8Gtv0y6Imx", now: now})
	}
}

// BenchmarkEncodeMessageEventEncodingJSON is the reference point: the same
// event through encoding/json and the aws-lambda-go struct.
func BenchmarkEncodeMessageEventEncodingJSON(b *testing.B) {
	ev := decodeAWS(b, appendEvent(nil, &testDefaults, sampleMeta(), &eventSpec{typ: protocol.EventMessage, routeKey: "sendmessage", id: "Q8tVxT6MuwQn8Gtv0y6Imx", now: time.Now(), body: []byte(`{"action":"sendmessage","data":"hello, world, this is a typical chat message"}`)}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(&ev); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzEventEncoding: whatever the client sends (user agent, headers, query,
// body, close reason), the event is valid JSON that decodes into the
// aws-lambda-go type with the same values (invalid UTF-8 replaced, as
// encoding/json does).
func FuzzEventEncoding(f *testing.F) {
	f.Add("agent", "X-H", "v", "q", "1", []byte(`{"action":"x"}`), false, "bye", 1000)
	f.Add("\xff\x00", "a\"b", "\u2028", "", "", []byte{0, 0xff}, true, "\n", 4999)
	f.Fuzz(func(t *testing.T, ua, hname, hval, qname, qval string, body []byte, binary bool, reason string, code int) {
		m := sampleMeta()
		m.UserAgent = ua
		m.Headers = []Pair{{hname, hval}}
		m.Query = []Pair{{qname, qval}}
		fix := func(s string) string { // what encoding/json makes of s
			b, _ := json.Marshal(s)
			var out string
			_ = json.Unmarshal(b, &out)
			return out
		}
		for _, typ := range []string{protocol.EventConnect, protocol.EventMessage, protocol.EventDisconnect} {
			data := appendEvent(nil, &testDefaults, m, &eventSpec{typ: typ, routeKey: "k", id: "ID", now: time.Now(), body: body, binary: binary, code: code, reason: reason})
			if !json.Valid(data) {
				t.Fatalf("%s: invalid JSON: %s", typ, data)
			}
			ev := decodeAWS(t, data)
			if ev.RequestContext.Identity.UserAgent != fix(ua) {
				t.Fatalf("user agent %q → %q", ua, ev.RequestContext.Identity.UserAgent)
			}
			switch typ {
			case protocol.EventConnect:
				if ev.MultiValueHeaders[fix(hname)][0] != fix(hval) || ev.QueryStringParameters[fix(qname)] != fix(qval) {
					t.Fatalf("headers/query: %v %v", ev.MultiValueHeaders, ev.QueryStringParameters)
				}
			case protocol.EventMessage:
				got := ev.Body
				if ev.IsBase64Encoded {
					b, err := base64.StdEncoding.DecodeString(got)
					if err != nil {
						t.Fatal(err)
					}
					got = string(b)
				} else if binary && len(body) > 0 {
					t.Fatal("binary body not base64")
				}
				want := string(body)
				if !binary {
					want = fix(want)
				}
				if got != want {
					t.Fatalf("body %q → %q", body, got)
				}
			case protocol.EventDisconnect:
				if ev.RequestContext.DisconnectReason == nil || *ev.RequestContext.DisconnectReason != fix(reason) || ev.RequestContext.DisconnectStatusCode != int64(code) {
					t.Fatalf("reason/code: %+v", ev.RequestContext)
				}
			}
		}
	})
}
