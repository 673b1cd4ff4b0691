package lifecycle

import (
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// A RESUME event is an API Gateway-shaped event with route key $resume; it
// says how long the connection was away and carries no request headers or
// disconnect fields.
func TestResumeEventSaysHowLongTheConnectionWasAway(t *testing.T) {
	data := appendEvent(nil, &testDefaults, sampleMeta(), &eventSpec{typ: protocol.EventResume, routeKey: protocol.RouteResume, id: "R1", now: time.Now(), away: 2140 * time.Millisecond})
	decodeAWS(t, data) // the aws-lambda-go type decodes it
	ev, err := protocol.DecodeEvent(data)
	if err != nil {
		t.Fatal(err)
	}
	rc := ev.RequestContext
	if rc.EventType != "RESUME" || rc.RouteKey != "$resume" || rc.ConnectionID != "AAAAAAAAAAAAAAAA" || rc.DisconnectReason != nil || len(ev.Headers) != 0 {
		t.Fatalf("context %+v headers %v", rc, ev.Headers)
	}
	if x := ev.Switchboard; x.DetachedMs != 2140 || x.UserID != "alice" || x.EventID != "R1" {
		t.Fatalf("extension %+v", x)
	}
	if a, ok := rc.Authorizer.(map[string]any); !ok || a["principalId"] != "alice" {
		t.Fatalf("authorizer on RESUME: %#v", rc.Authorizer)
	}
}
