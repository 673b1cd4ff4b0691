package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// fakeGroups records what the groups extension asked for.
type fakeGroups struct {
	mu      sync.Mutex
	calls   []string
	members map[string][]string // "group:g" / "user:u" → IDs
	err     error               // returned by every call when set
}

func newFakeGroups() *fakeGroups { return &fakeGroups{members: map[string][]string{}} }

func (f *fakeGroups) record(format string, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.err
}

func (f *fakeGroups) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeGroups) SendGroup(_ context.Context, g string, d []byte, bin bool, ex string) error {
	return f.record("send group %s %q binary=%v excluded=%s", g, d, bin, ex)
}
func (f *fakeGroups) SendUser(_ context.Context, u string, d []byte, bin bool) error {
	return f.record("send user %s %q binary=%v", u, d, bin)
}
func (f *fakeGroups) Broadcast(_ context.Context, d []byte, bin bool) error {
	return f.record("broadcast %q binary=%v", d, bin)
}
func (f *fakeGroups) AddToGroup(_ context.Context, g, id string) error {
	return f.record("add %s %s", g, id)
}
func (f *fakeGroups) RemoveFromGroup(_ context.Context, g, id string) error {
	return f.record("remove %s %s", g, id)
}
func (f *fakeGroups) list(key, cursor string, limit int) ([]string, string, error) {
	if err := f.record("list %s cursor=%s limit=%d", key, cursor, limit); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := f.members[key]
	if cursor == "" && len(ids) > limit {
		return ids[:limit], "next", nil
	}
	if cursor == "next" {
		return ids[limit:], "", nil
	}
	return ids, "", nil
}
func (f *fakeGroups) GroupConnections(_ context.Context, g, cursor string, limit int) ([]string, string, error) {
	return f.list("group:"+g, cursor, limit)
}
func (f *fakeGroups) UserConnections(_ context.Context, u, cursor string, limit int) ([]string, string, error) {
	return f.list("user:"+u, cursor, limit)
}
func (f *fakeGroups) GroupCount(_ context.Context, g string) (int64, error) {
	err := f.record("count group %s", g)
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.members["group:"+g])), err
}
func (f *fakeGroups) UserCount(_ context.Context, u string) (int64, error) {
	err := f.record("count user %s", u)
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.members["user:"+u])), err
}
func (f *fakeGroups) CloseUser(_ context.Context, u string, code int, reason string) error {
	return f.record("close user %s %d %q", u, code, reason)
}

var _ GroupsController = (*fakeGroups)(nil)

func groupsServer(t *testing.T) (*fakeGroups, string, *API) {
	t.Helper()
	a, _ := newTestAPI(t, Config{Insecure: true}, newFake())
	g := newFakeGroups()
	a.EnableGroups(g)
	return g, serve(t, a).URL, a
}

func TestGroupPathsAnswer403WhenTheExtensionIsOff(t *testing.T) {
	a, _ := newTestAPI(t, Config{Insecure: true}, newFake())
	url := serve(t, a).URL
	for _, p := range []string{"/@groups/room", "/prod/@users/alice", "/@broadcast"} {
		st, h, b := do(t, http.MethodPost, url+p, nil, []byte("hi"))
		wantError(t, st, h, b, http.StatusForbidden, codeForbidden)
	}
}

func TestSendToGroupUserAndEveryone(t *testing.T) {
	g, url, _ := groupsServer(t)
	id := conn.NewID()
	cases := []struct {
		path, ctype string
		body        string
		want        string
	}{
		{"/prod/@groups/room-1", "", "hello", `send group room-1 "hello" binary=false excluded=`},
		{"/@groups/room-1?excluded=" + id, "text/plain", "hi", `send group room-1 "hi" binary=false excluded=` + id},
		{"/%40groups/a%2Fb%7Bc%7D", "", "x", `send group a/b{c} "x" binary=false excluded=`},
		{"/prod/@users/alice", "application/json", `{"a":1}`, `send user alice "{\"a\":1}" binary=false`},
		{"/@broadcast", "application/x-custom", "\x00\x01", `broadcast "\x00\x01" binary=true`},
	}
	for _, c := range cases {
		hdr := map[string]string{}
		if c.ctype != "" {
			hdr["Content-Type"] = c.ctype
		}
		st, _, b := do(t, http.MethodPost, url+c.path, hdr, []byte(c.body))
		if st != http.StatusOK || string(b) != "{}" {
			t.Fatalf("POST %s: %d %s", c.path, st, b)
		}
		if got := g.last(); got != c.want {
			t.Fatalf("POST %s: controller saw %s, want %s", c.path, got, c.want)
		}
	}
}

func TestBadGroupAndUserNamesAre400BeforeTheController(t *testing.T) {
	g, url, _ := groupsServer(t)
	id := conn.NewID()
	long := strings.Repeat("g", 129)
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/@groups/a.b"},
		{http.MethodPost, "/@groups/a%20b"},
		{http.MethodPost, "/@groups/a*"},
		{http.MethodPost, "/@groups/%3E"},
		{http.MethodPost, "/@groups/" + long},
		{http.MethodPost, "/@groups/caf%C3%A9"},
		{http.MethodPut, "/@groups/bad%0Aname/connections/" + id},
		{http.MethodPut, "/@groups/room/connections/not-an-id"},
		{http.MethodGet, "/@users/a%22b"},
		{http.MethodDelete, "/@users/%5C"},
		{http.MethodPost, "/@groups/room?excluded=nope"},
	} {
		st, h, b := do(t, c.method, url+c.path, nil, []byte("x"))
		wantError(t, st, h, b, http.StatusBadRequest, codeBadRequest)
	}
	if len(g.calls) != 0 {
		t.Fatalf("controller called for bad input: %v", g.calls)
	}
}

func TestGroupSendLimitsAndErrors(t *testing.T) {
	g, url, _ := groupsServer(t)
	st, h, b := do(t, http.MethodPost, url+"/@groups/room", nil, make([]byte, DefaultMaxMessageBytes+1))
	wantError(t, st, h, b, http.StatusRequestEntityTooLarge, codePayloadTooLarge)
	st, h, b = do(t, http.MethodPost, url+"/@groups/room", nil, nil)
	wantError(t, st, h, b, http.StatusBadRequest, codeBadRequest)

	g.err = ErrTooManyGroups
	st, h, b = do(t, http.MethodPut, url+"/@groups/room/connections/"+conn.NewID(), nil, nil)
	wantError(t, st, h, b, http.StatusConflict, codeConflict)
	g.err = conn.ErrGone
	st, h, b = do(t, http.MethodPut, url+"/@groups/room/connections/"+conn.NewID(), nil, nil)
	wantError(t, st, h, b, http.StatusGone, codeGone)
	g.err = ErrInvalidCursor
	st, h, b = do(t, http.MethodGet, url+"/@groups/room/connections?cursor=zz", nil, nil)
	wantError(t, st, h, b, http.StatusBadRequest, codeBadRequest)
	g.err = nil
	st, h, b = do(t, http.MethodPatch, url+"/@groups/room", nil, nil)
	wantError(t, st, h, b, http.StatusMethodNotAllowed, codeMethodNotAllowed)
}

func TestMembershipChangesAndUserClose(t *testing.T) {
	g, url, _ := groupsServer(t)
	id := conn.NewID()
	if st, _, b := do(t, http.MethodPut, url+"/prod/@groups/room/connections/"+id, nil, nil); st != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", st, b)
	}
	if got := g.last(); got != "add room "+id {
		t.Fatalf("controller saw %q", got)
	}
	if st, _, _ := do(t, http.MethodDelete, url+"/@groups/room/connections/"+id, nil, nil); st != http.StatusNoContent {
		t.Fatalf("DELETE member: %d", st)
	}
	if got := g.last(); got != "remove room "+id {
		t.Fatalf("controller saw %q", got)
	}
	if st, _, _ := do(t, http.MethodDelete, url+"/@users/bob", nil, nil); st != http.StatusNoContent {
		t.Fatalf("DELETE user: %d", st)
	}
	if got := g.last(); got != `close user bob 1000 "Connection Closed Normally"` {
		t.Fatalf("controller saw %q", got)
	}
	if st, _, _ := do(t, http.MethodDelete, url+"/@users/bob?code=4401&reason=kicked", nil, nil); st != http.StatusNoContent {
		t.Fatalf("DELETE user: %d", st)
	}
	if got := g.last(); got != `close user bob 4401 "kicked"` {
		t.Fatalf("controller saw %q", got)
	}
	st, h, b := do(t, http.MethodDelete, url+"/@users/bob?code=1006", nil, nil)
	wantError(t, st, h, b, http.StatusBadRequest, codeBadRequest)
}

func TestCountsHeadAndPagedListing(t *testing.T) {
	g, url, a := groupsServer(t)
	g.members["group:room"] = []string{"A", "B", "C"}
	g.members["user:alice"] = []string{"D"}

	st, _, b := do(t, http.MethodGet, url+"/@groups/room", nil, nil)
	if st != http.StatusOK || string(b) != `{"connections":3,"group":"room"}` {
		t.Fatalf("GET group: %d %s", st, b)
	}
	st, _, b = do(t, http.MethodGet, url+"/@users/alice", nil, nil)
	if st != http.StatusOK || string(b) != `{"connections":1,"user":"alice"}` {
		t.Fatalf("GET user: %d %s", st, b)
	}
	if st, _, _ := do(t, http.MethodHead, url+"/@groups/room", nil, nil); st != http.StatusOK {
		t.Fatalf("HEAD existing group: %d", st)
	}
	if st, h, _ := do(t, http.MethodHead, url+"/@groups/empty", nil, nil); st != http.StatusNotFound || h.Get("x-amzn-ErrorType") != codeNotFound {
		t.Fatalf("HEAD empty group: %d %v", st, h)
	}
	if st, _, _ := do(t, http.MethodHead, url+"/@users/nobody", nil, nil); st != http.StatusNotFound {
		t.Fatalf("HEAD unknown user: %d", st)
	}

	type page struct {
		Connections []string `json:"connections"`
		Cursor      string   `json:"cursor"`
	}
	var p page
	st, _, b = do(t, http.MethodGet, url+"/@groups/room/connections?limit=2", nil, nil)
	if err := json.Unmarshal(b, &p); st != http.StatusOK || err != nil || len(p.Connections) != 2 || p.Cursor != "next" {
		t.Fatalf("first page: %d %s", st, b)
	}
	st, _, b = do(t, http.MethodGet, url+"/@groups/room/connections?limit=2&cursor=next", nil, nil)
	p = page{}
	if err := json.Unmarshal(b, &p); st != http.StatusOK || err != nil || len(p.Connections) != 1 || p.Cursor != "" {
		t.Fatalf("last page: %d %s", st, b)
	}
	st, _, b = do(t, http.MethodGet, url+"/@users/nobody/connections", nil, nil)
	if st != http.StatusOK || string(b) != `{"connections":[]}` {
		t.Fatalf("empty listing: %d %s", st, b)
	}
	st, h, b := do(t, http.MethodGet, url+"/@users/alice/connections?limit=0", nil, nil)
	wantError(t, st, h, b, http.StatusBadRequest, codeBadRequest)

	if n := testutil.ToFloat64(a.m.requests.WithLabelValues(opGroupList, "200")); n != 2 {
		t.Fatalf("group_list 200 requests = %v, want 2", n)
	}
}

func TestExtensionPathsParse(t *testing.T) {
	id := conn.NewID()
	for _, c := range []struct {
		path string
		kind routeKind
		name string
		bad  bool
	}{
		{"/@groups/g", routeGroup, "g", false},
		{"/stage/@groups/g/connections", routeGroupConns, "g", false},
		{"/@groups/g/connections/" + id, routeGroupMember, "g", false},
		{"/@users/u/connections", routeUserConns, "u", false},
		{"/@broadcast", routeBroadcast, "", false},
		{"/@broadcast/x", routeNone, "", false},
		{"/@groups", routeNone, "", false},
		{"/@groups/g/members", routeNone, "", false},
		{"/@users/u/connections/" + id, routeNone, "", false},
		{"/@groups/g/connections/" + id + "/x", routeNone, "", false},
		{"/@groups//connections", routeGroupConns, "", true},
		{"/@groups/%zz", routeGroup, "", true},
	} {
		rt := parsePath(c.path)
		if rt.kind != c.kind || rt.name != c.name || (rt.bad != "") != c.bad {
			t.Errorf("parsePath(%q) = %+v, want kind %d name %q bad %v", c.path, rt, c.kind, c.name, c.bad)
		}
	}
}
