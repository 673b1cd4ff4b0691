package protocol

import (
	"strings"
	"testing"
)

// docs/protocol.md, "Subjects".
func TestSubjects(t *testing.T) {
	s := NewSubjects("sb.prod")
	for got, want := range map[string]string{
		s.Connect:                    "sb.prod.connect",
		s.EventConnect:               "sb.prod.event.connect",
		s.EventDisconnect:            "sb.prod.event.disconnect",
		s.Events:                     "sb.prod.event.>",
		s.Route("chat"):              "sb.prod.route.chat",
		s.Route(DefaultToken):        "sb.prod.route._default",
		"sb.prod." + SuffixAllRoutes: "sb.prod.route.>",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// docs/protocol.md, "Routes": which route keys travel on which token.
func TestRouteTokens(t *testing.T) {
	for _, tc := range []struct{ key, tok string }{
		{"$default", "_default"},
		{"sendmessage", "sendmessage"},
		{"chat/join", "chat/join"},
		{strings.Repeat("k", 128), strings.Repeat("k", 128)},
		{strings.Repeat("k", 129), ""},
		{"", ""},
		{"$connect", ""},
		{"$disconnect", ""},
		{"$custom", ""},
		{"_default", ""},
		{"a.b", ""},
		{"a*", ""},
		{">", ""},
		{"a b", ""},
		{`a"b`, ""},
		{"caf\xc3\xa9", ""},
	} {
		if got := RouteToken(tc.key); got != tc.tok {
			t.Errorf("RouteToken(%q) = %q, want %q", tc.key, got, tc.tok)
		}
	}
}

func TestErrorTextIsOneBoundedLine(t *testing.T) {
	if got := ErrorText("bad\r\nthing\x00\x7f"); got != "bad  thing  " {
		t.Fatalf("got %q", got)
	}
	if got := ErrorText(strings.Repeat("x", 300)); len(got) != MaxErrorText {
		t.Fatalf("len %d, want %d", len(got), MaxErrorText)
	}
}

func TestDecodeEventReadsTheExtension(t *testing.T) {
	e, err := DecodeEvent([]byte(`{"requestContext":{"routeKey":"chat","eventType":"MESSAGE","connectionId":"AAAAAAAAAAAAAAAA",` +
		`"switchboard":{"version":1,"eventId":"E","nodeId":"n-1","userId":"alice","groups":["g"],"subprotocols":["p"]}},"body":"hi","isBase64Encoded":false}`))
	if err != nil {
		t.Fatal(err)
	}
	x := e.Switchboard
	if e.RequestContext.RouteKey != "chat" || e.RequestContext.EventType != EventMessage || e.Body != "hi" ||
		x.Version != Version || x.EventID != "E" || x.NodeID != "n-1" || x.UserID != "alice" || x.Groups[0] != "g" || x.Subprotocols[0] != "p" {
		t.Fatalf("decoded %+v", e)
	}
	if _, err := DecodeEvent([]byte(`{`)); err == nil {
		t.Fatal("bad JSON decoded")
	}
}
