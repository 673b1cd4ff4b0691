package api

import (
	"strings"
	"testing"

	"github.com/switchboardgw/switchboard/internal/conn"
)

func TestParsePath(t *testing.T) {
	const id = "AbCdEfGh-_012345" // a valid 16-character ID
	tests := []struct {
		name string
		path string
		kind routeKind
		id   string
		bad  bool
	}{
		{"no stage", "/@connections/" + id, routeConn, id, false},
		{"stage prefix", "/prod/@connections/" + id, routeConn, id, false},
		{"deep prefix", "/a/b/c/@connections/" + id, routeConn, id, false},
		{"@ escaped", "/prod/%40connections/" + id, routeConn, id, false},
		{"@ escaped lower-case hex irrelevant (digits)", "/%40connections/" + id, routeConn, id, false},
		{"id fully escaped", "/@connections/%41bCdEfGh-_012345", routeConn, id, false},
		{"double slash in prefix", "//prod//@connections/" + id, routeConn, id, false},
		{"dot-dot in prefix is ignored", "/prod/../@connections/" + id, routeConn, id, false},
		{"batch", "/prod/@connections", routeBatch, "", false},
		{"batch no stage", "/@connections", routeBatch, "", false},
		{"missing id", "/prod/@connections/", routeConn, "", true},
		{"AWS-style id with =", "/@connections/R1kmxc2VNjMCFIA%3D", routeConn, "", true},
		{"AWS-style id with raw =", "/@connections/R1kmxc2VNjMCFIA=", routeConn, "", true},
		{"dot-dot as id", "/@connections/..", routeConn, "", true},
		{"very long id", "/@connections/" + strings.Repeat("A", 10000), routeConn, "", true},
		{"long escaped id", "/@connections/" + strings.Repeat("%41", 17), routeConn, "", true},
		{"id decoding to a slash stays one segment", "/@connections/AbCdEfGh%2F_01234", routeConn, "", true},
		{"bad escape", "/@connections/AbCdEfGh%zz012345", routeConn, "", true},
		{"trailing slash after id", "/@connections/" + id + "/", routeNone, "", false},
		{"extra segment", "/@connections/" + id + "/x", routeNone, "", false},
		{"double slash before id", "/@connections//" + id, routeNone, "", false},
		{"dot-dot after id", "/@connections/" + id + "/..", routeNone, "", false},
		{"root", "/", routeNone, "", false},
		{"empty", "", routeNone, "", false},
		{"relative", "@connections/" + id, routeNone, "", false},
		{"wrong case", "/@Connections/" + id, routeNone, "", false},
		{"prefix only", "/prod/" + id, routeNone, "", false},
		{"suffix match is not a segment", "/x@connections/" + id, routeNone, "", false},
		{"first @connections decides", "/@connections/@connections/" + id, routeNone, "", false},
		{"escaped slash before @connections is part of the stage", "/a%2F/@connections/" + id, routeConn, id, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parsePath(tc.path)
			if got.kind != tc.kind {
				t.Fatalf("parsePath(%q).kind = %d, want %d", tc.path, got.kind, tc.kind)
			}
			if (got.bad != "") != tc.bad {
				t.Fatalf("parsePath(%q).bad = %q, want bad=%v", tc.path, got.bad, tc.bad)
			}
			if got.id != tc.id {
				t.Fatalf("parsePath(%q).id = %q, want %q", tc.path, got.id, tc.id)
			}
		})
	}
}

// FuzzParsePath: any path parses without panicking, and an ID it accepts is
// always a valid ID (so it can never smuggle '/' or other bytes downstream).
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/@connections/AbCdEfGh-_012345", "/prod/%40connections/AbCdEfGh-_01234%35",
		"/@connections", "/@connections/", "//a//@connections//x", "/@connections/%2F%2F", "/%40connections/%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r := parsePath(p)
		switch r.kind {
		case routeConn:
			if r.bad == "" && !conn.ValidID(r.id) {
				t.Fatalf("parsePath(%q) accepted invalid id %q", p, r.id)
			}
			if r.bad != "" && r.id != "" {
				t.Fatalf("parsePath(%q) returned an id with bad=%q", p, r.bad)
			}
		case routeBatch, routeNone:
			if r.id != "" || r.bad != "" {
				t.Fatalf("parsePath(%q) = %+v: id or bad set on a non-connection route", p, r)
			}
		default:
			t.Fatalf("parsePath(%q): unknown kind %d", p, r.kind)
		}
	})
}
