package lifecycle

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/switchboardgw/switchboard/internal/rules"
)

func TestConnectReplyFormats(t *testing.T) {
	cases := []struct {
		name, reply string
		want        Decision
	}{
		{"empty reply allows", ``, Decision{Allow: true, Reason: "allowed"}},
		{"null allows (a Lambda returning nothing)", `null`, Decision{Allow: true, Reason: "allowed"}},
		{"bare Lambda 200", `{"statusCode":200}`, Decision{Allow: true, Reason: "allowed"}},
		{"Lambda deny with body", `{"statusCode":401,"body":"no token","headers":{"WWW-Authenticate":"Bearer"}}`,
			Decision{Status: 401, Reason: "denied", Body: []byte("no token"), Header: map[string][]string{"Www-Authenticate": {"Bearer"}}}},
		{"base64 deny body", `{"statusCode":403,"body":"aGk=","isBase64Encoded":true}`, Decision{Status: 403, Reason: "denied", Body: []byte("hi")}},
		{"redirect status denies", `{"statusCode":302}`, Decision{Status: 302, Reason: "denied"}},
		{"subprotocol, principal, user, groups", `{"statusCode":200,"headers":{"Sec-WebSocket-Protocol":"chat","Upgrade":"evil"},"principalId":"u1","context":{"role":"admin","n":1},"userId":"u1","groups":["g1","g-2"]}`,
			Decision{Allow: true, Reason: "allowed", Header: map[string][]string{"Sec-Websocket-Protocol": {"chat"}},
				Principal: json.RawMessage(`{"principalId":"u1","role":"admin","n":1}`), UserID: "u1", Groups: []string{"g1", "g-2"}}},
		{"context without principalId", `{"context":{"a":"b"}}`, Decision{Allow: true, Reason: "allowed", Principal: json.RawMessage(`{"a":"b"}`)}},
		{"multiValueHeaders win", `{"headers":{"X-A":"1"},"multiValueHeaders":{"X-A":["2","3"]}}`,
			Decision{Allow: true, Reason: "allowed", Header: map[string][]string{"X-A": {"2", "3"}}}},
	}
	for _, c := range cases {
		got, err := parseReply([]byte(c.reply), 8192, 64)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}

func TestMalformedConnectReplies(t *testing.T) {
	for _, reply := range []string{
		`not json`, `{"statusCode":"200"}`, `{"statusCode":100}`, `{"statusCode":600}`, `[1]`,
		`{"headers":{"X-A":"line\r\nInjected: 1"}}`, `{"headers":{"Bad Name":"v"}}`,
		`{"userId":"a.b"}`, `{"groups":["ok","*"]}`, `{"groups":["g with space"]}`,
		`{"context":[1,2]}`, `{"context":"str"}`, `{"statusCode":403,"body":"!!","isBase64Encoded":true}`,
		`{"principalId":"` + strings.Repeat("p", 9000) + `"}`,
		`{"groups":[` + strings.Repeat(`"g",`, 64) + `"g"]}`,
	} {
		if d, err := parseReply([]byte(reply), 8192, 64); err == nil {
			t.Errorf("%.60s: accepted as %+v, want a bad reply", reply, d)
		}
	}
}

func TestValidNameRules(t *testing.T) {
	for _, s := range []string{"alice", "user-1", "a@b.c"[:3], "g:1/x"} {
		if !rules.ValidName(s) {
			t.Errorf("%q should be valid", s)
		}
	}
	for _, s := range []string{"", "a.b", "a b", "*", ">", "ü", strings.Repeat("x", 129)} {
		if rules.ValidName(s) {
			t.Errorf("%q should be invalid", s)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	bad := []Config{
		{Prefix: "a..b"}, {Prefix: "a.*"}, {Prefix: "$SYS"}, {ConnectMode: "maybe"}, {InvalidRouteKey: "ignore"},
		{ConnectTimeout: -1}, {QueueLen: -1}, {RouteSelection: "$request.header.x"}, {Routes: []string{"a.b"}},
		{TwoWayRoutes: []string{"x y"}}, {JetStream: true, Stream: "a.b"},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: want an error", c)
		}
	}
}

// FuzzConnectReply: no reply crashes the node, and whatever is accepted is
// safe to use: legal names, valid bounded principal JSON, header values
// without line breaks, deny statuses in 300–599.
func FuzzConnectReply(f *testing.F) {
	for _, s := range []string{``, `null`, `{"statusCode":401,"body":"x"}`, `{"principalId":"a","context":{"k":[1,{"x":null}]}}`,
		`{"headers":{"Sec-WebSocket-Protocol":"chat"},"groups":["a","b"],"userId":"u"}`, `{"context":{}}`, `{"statusCode":200,"multiValueHeaders":{"A":["1","2"]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		d, err := parseReply(reply, 512, 4)
		if err != nil {
			return
		}
		if !d.Allow && (d.Status < 300 || d.Status > 599) {
			t.Fatalf("deny status %d", d.Status)
		}
		if d.UserID != "" && !rules.ValidName(d.UserID) {
			t.Fatalf("user %q", d.UserID)
		}
		if len(d.Groups) > 4 {
			t.Fatalf("%d groups", len(d.Groups))
		}
		for _, g := range d.Groups {
			if !rules.ValidName(g) {
				t.Fatalf("group %q", g)
			}
		}
		if len(d.Principal) > 0 {
			var obj map[string]any
			if len(d.Principal) > 512 || json.Unmarshal(d.Principal, &obj) != nil {
				t.Fatalf("principal %s", d.Principal)
			}
		}
		for k, vs := range d.Header {
			for _, v := range vs {
				if strings.ContainsAny(k+v, "\r\n\x00") {
					t.Fatalf("header %q: %q", k, v)
				}
			}
		}
	})
}
