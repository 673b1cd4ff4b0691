package lifecycle

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

func mustSelector(t testing.TB, expr string, allow []string, policy InvalidKeyPolicy) routeSelector {
	t.Helper()
	sel, err := compileSelector(expr)
	if err != nil {
		t.Fatalf("compile %q: %v", expr, err)
	}
	r := routeSelector{sel: sel, max: 128, policy: policy}
	if allow != nil {
		r.allow = map[string]bool{}
		for _, a := range allow {
			r.allow[a] = true
		}
	}
	return r
}

func TestRouteSelectionLikeAPIGateway(t *testing.T) {
	cases := []struct {
		expr, body string
		binary     bool
		want       string
	}{
		{"$request.body.action", `{"action":"join"}`, false, "join"},
		{"$request.body.action", `  {"x":{"action":"no"},"action" : "sendmessage"}`, false, "sendmessage"},
		{"$request.body.action", `{"other":1}`, false, "$default"},           // missing path → "" → $default
		{"$request.body.action", `not json`, false, "$default"},              // non-JSON
		{"$request.body.action", `{"action":"join"`, false, "$default"},      // truncated JSON
		{"$request.body.action", ``, false, "$default"},                      // empty
		{"$request.body.action", `{"action":"join"}`, true, "$default"},      // binary
		{"$request.body.action", `{"action":null}`, false, "$default"},       // null
		{"$request.body.action", `{"action":42}`, false, "42"},               // numbers as written
		{"$request.body.action", `{"action":true}`, false, "true"},           // booleans too
		{"$request.body.action", `{"action":"j\u006fin"}`, false, "join"},    // escapes decoded
		{"$request.body.action", `{"act\u0069on":"join"}`, false, "join"},    // escaped key
		{"$request.body.action", `["action","join"]`, false, "$default"},     // not an object
		{"$request.body.action", `{"action":"$connect"}`, false, "$default"}, // $-keys are reserved
		{"$request.body.action", `{"action":"$default"}`, false, "$default"},
		{"$request.body.msg.type", `{"msg":{"a":[1,{"type":"x"}],"type":"chat"}}`, false, "chat"},
		{"${request.body.service}/${request.body.action}", `{"service":"chat","action":"join"}`, false, "chat/join"},
		{"${request.body.service}/${request.body.action}", `{"service":"chat"}`, false, "chat/"},
		{"${request.body.service}/${request.body.action}", `{}`, false, "/"},
		{"\\$default", `{"action":"join"}`, false, "$default"},
		{"static", `whatever`, true, "static"},
	}
	for _, c := range cases {
		r := mustSelector(t, c.expr, nil, InvalidKeyDefault)
		if got := r.route([]byte(c.body), c.binary).key; got != c.want {
			t.Errorf("%s on %q (binary=%v): got %q, want %q", c.expr, c.body, c.binary, got, c.want)
		}
	}
}

func TestRouteSelectionExpressionErrors(t *testing.T) {
	for _, expr := range []string{"", "$request.header.x", "${request.body.a", "${request.body.}", "$request.body.a..b", "a$b", "${request.querystring.x}"} {
		if _, err := compileSelector(expr); err == nil {
			t.Errorf("%q: want an error", expr)
		}
	}
}

func TestHostileRouteKeysNeverBecomeBadSubjects(t *testing.T) {
	hostile := []string{
		"a.b", "*", ">", "a*", "a>", "a b", " a", "a\t", "a\nb", "a\rb", "\x00", "a\x7f", "日本",
		"\u00a0nbsp", "a\u2028b", "_default", "$connect", "$disconnect", strings.Repeat("k", 129),
		"a..b", ".", "..", "\"q\"", `back\slash`, "a.>", "foo.*.bar",
	}
	for _, policy := range []InvalidKeyPolicy{InvalidKeyDefault, InvalidKeyDrop} {
		r := mustSelector(t, "$request.body.action", nil, policy)
		for _, k := range hostile {
			body, _ := json.Marshal(map[string]string{"action": k})
			res := r.route(body, false)
			switch {
			case res.drop:
				if policy != InvalidKeyDrop || !res.invalid {
					t.Errorf("%q: dropped under policy %s", k, policy)
				}
			case res.key != protocol.RouteDefault || res.token != protocol.DefaultToken:
				t.Errorf("%q: routed to key %q token %q, want $default", k, res.key, res.token)
			}
			if k != "$default" && !res.invalid && k[0] != '$' {
				t.Errorf("%q: not flagged invalid", k)
			}
		}
	}
	if !protocol.ValidRouteKey(strings.Repeat("k", 128), 128) {
		t.Error("a 128-byte key is legal")
	}
	for _, ok := range []string{"join", "chat/join", "a-b_c:d@e", "UPPER", "x=1"} {
		if !protocol.ValidRouteKey(ok, protocol.MaxRouteKey) || protocol.RouteToken(ok) != ok {
			t.Errorf("%q should be a legal key and its own token", ok)
		}
	}
	if protocol.RouteToken("$default") != "_default" || protocol.RouteToken("a.b") != "" {
		t.Error("protocol.RouteToken")
	}
}

func TestRouteAllowListSendsUnknownKeysToDefault(t *testing.T) {
	r := mustSelector(t, "$request.body.action", []string{"join", "leave"}, InvalidKeyDefault)
	if got := r.route([]byte(`{"action":"join"}`), false); got.key != "join" || got.token != "join" {
		t.Fatalf("allowed key: %+v", got)
	}
	if got := r.route([]byte(`{"action":"other"}`), false); got.key != protocol.RouteDefault || got.invalid {
		t.Fatalf("unknown key: %+v", got)
	}
}

// checkSubjectToken fails unless tok is a single safe NATS subject token.
func checkSubjectToken(t testing.TB, tok string) {
	t.Helper()
	if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") || !utf8.ValidString(tok) {
		t.Fatalf("bad subject token %q", tok)
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < 0x21 || tok[i] > 0x7e {
			t.Fatalf("bad byte %#x in token %q", tok[i], tok)
		}
	}
}

// FuzzRouteSelection: whatever a client sends, selection never panics and
// the result is $default, a drop, or a legal single subject token. When the
// body is JSON with a string action, a legal key is selected exactly.
func FuzzRouteSelection(f *testing.F) {
	for _, s := range []string{`{"action":"join"}`, `{"action":"a.b"}`, `{"a":{"b":"c"}}`, `[1,2]`, `{"action":"\u0000"}`, `{"action":{"x":1}}`, `"str"`, `{"action":"` + strings.Repeat("x", 200) + `"}`} {
		f.Add([]byte(s), false)
	}
	r1 := mustSelector(f, "$request.body.action", nil, InvalidKeyDefault)
	r2 := mustSelector(f, "${request.body.a.b}/${request.body.action}", nil, InvalidKeyDrop)
	f.Fuzz(func(t *testing.T, body []byte, binary bool) {
		for _, r := range []routeSelector{r1, r2} {
			res := r.route(body, binary)
			if res.drop {
				continue
			}
			if res.key == protocol.RouteDefault {
				if res.token != protocol.DefaultToken {
					t.Fatalf("$default token %q", res.token)
				}
				continue
			}
			checkSubjectToken(t, res.token)
		}
		// Agreement with encoding/json on the simple case.
		var v map[string]any
		if !binary && json.Unmarshal(body, &v) == nil {
			if s, ok := v["action"].(string); ok && protocol.ValidRouteKey(s, protocol.MaxRouteKey) && strings.Count(string(body), `"action"`) == 1 {
				if got := r1.route(body, false).key; got != s {
					t.Fatalf("body %q: selected %q, encoding/json says %q", body, got, s)
				}
			}
		}
	})
}

func BenchmarkRouteSelection(b *testing.B) {
	r := mustSelector(b, "$request.body.action", nil, InvalidKeyDefault)
	body := []byte(`{"data":{"text":"hello there","to":["a","b"]},"action":"sendmessage"}`)
	b.ReportAllocs()
	for b.Loop() {
		if r.route(body, false).key != "sendmessage" {
			b.Fatal("wrong key")
		}
	}
}

// recTap records what a Tap is shown.
type recTap struct {
	mu   sync.Mutex
	seen []string
}

func (r *recTap) Routed(route, connID, userID string, payload []byte, binary bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, fmt.Sprintf("%s %s %s %v %s", route, connID, userID, binary, payload))
}

func TestTapSeesEveryMessageQueuedWithItsRouteKey(t *testing.T) {
	nc := testenv.StartNATS(t).Connect(t)
	tap := &recTap{}
	l, _ := newLC(t, Config{Tap: tap, InvalidRouteKey: InvalidKeyDrop, SilentNoRoute: true}, nc)
	m := meta()
	m.UserID = "alice"
	for _, body := range []string{`{"action":"join"}`, `{"text":"no action"}`, `{"action":"a.b"}`} {
		_ = l.Message(m, []byte(body), false, nil)
	}
	_ = l.Message(m, []byte{0xff}, true, nil)
	// The hostile key was dropped, not queued: the tap never saw it.
	want := []string{
		"join " + m.ID + ` alice false {"action":"join"}`,
		"$default " + m.ID + ` alice false {"text":"no action"}`,
		"$default " + m.ID + " alice true \xff",
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if fmt.Sprint(tap.seen) != fmt.Sprint(want) {
		t.Fatalf("tap saw %q\nwant %q", tap.seen, want)
	}
}
