package api

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboardgw/switchboard/internal/conn"
)

func TestBatchPostsEachMessageAndReportsEach(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{Insecure: true, MaxMessageBytes: 16, MaxBatchItems: 10}, f)
	srv := serve(t, a)
	live := f.add(conn.Info{})
	gone := conn.NewID()
	body := `[
		{"connectionId":"` + live + `","data":"hello"},
		{"connectionId":"` + live + `","dataBase64":"AP8="},
		{"connectionId":"` + gone + `","data":"nobody home"},
		{"connectionId":"not-valid","data":"x"},
		{"connectionId":"` + live + `"},
		{"connectionId":"` + live + `","data":"` + strings.Repeat("z", 17) + `"},
		{"connectionId":"` + live + `","dataBase64":"!!"}
	]`
	status, h, resp := do(t, "POST", srv.URL+"/prod/@connections", map[string]string{"Content-Type": "application/json"}, []byte(body))
	if status != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("batch = %d %s", status, resp)
	}
	var out batchResponse
	if err := json.Unmarshal(resp, &out); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		status int
		code   string
	}{{200, ""}, {200, ""}, {410, "GoneException"}, {400, "BadRequestException"}, {400, "BadRequestException"},
		{413, "PayloadTooLargeException"}, {400, "BadRequestException"}}
	if len(out.Results) != len(want) {
		t.Fatalf("%d results, want %d: %s", len(out.Results), len(want), resp)
	}
	for i, w := range want {
		if r := out.Results[i]; r.StatusCode != w.status || r.ErrorType != w.code {
			t.Fatalf("result %d = %+v, want %d %q", i, r, w.status, w.code)
		}
	}
	got := f.messages(live)
	if len(got) != 2 || got[0] != (fakeMsg{data: "hello"}) || got[1] != (fakeMsg{data: "\x00\xff", binary: true}) {
		t.Fatalf("delivered %+v", got)
	}
}

func TestBatchRejectsMalformedRequests(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{Insecure: true, MaxBatchItems: 2, MaxBatchBytes: 200}, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	item := `{"connectionId":"` + id + `","data":"x"}`
	cases := []struct {
		body   string
		status int
		code   string
	}{
		{`{"not":"an array"}`, 400, "BadRequestException"},
		{`[]`, 400, "BadRequestException"},
		{`[` + item + `,` + item + `,` + item + `]`, 400, "BadRequestException"},
		{`[` + strings.Repeat(" ", 200) + item + `]`, 413, "PayloadTooLargeException"},
	}
	for _, c := range cases {
		status, h, body := do(t, "POST", srv.URL+"/@connections", nil, []byte(c.body))
		wantError(t, status, h, body, c.status, c.code)
	}
	if n := len(f.messages(id)); n != 0 {
		t.Fatalf("%d messages delivered by rejected batches", n)
	}
}

func TestBatchKeepsOrderPerConnection(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{Insecure: true, BatchConcurrency: 4}, f)
	srv := serve(t, a)
	ids := []string{f.add(conn.Info{}), f.add(conn.Info{}), f.add(conn.Info{})}
	var items []map[string]string
	for n := range 30 {
		for _, id := range ids {
			items = append(items, map[string]string{"connectionId": id, "data": strconv.Itoa(n)})
		}
	}
	body, _ := json.Marshal(items)
	if status, _, resp := do(t, "POST", srv.URL+"/@connections", nil, body); status != 200 {
		t.Fatalf("batch = %d %s", status, resp)
	}
	for _, id := range ids {
		got := f.messages(id)
		if len(got) != 30 {
			t.Fatalf("%d messages, want 30", len(got))
		}
		for n, m := range got {
			if m.data != strconv.Itoa(n) {
				t.Fatalf("message %d to %s is %q: order not kept", n, id, m.data)
			}
		}
	}
}
