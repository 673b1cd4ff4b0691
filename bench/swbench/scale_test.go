package swbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

func TestExactlyOnceFailsARepeatedOrMissingID(t *testing.T) {
	cases := []struct {
		name  string
		pages [][]string
		want  int
		fail  []string // substrings of the error; none = passes
	}{
		{"every ID once over pages", [][]string{{"a", "b"}, {"c"}, {}}, 3, nil},
		{"an ID on two pages", [][]string{{"a", "b"}, {"b", "c"}}, 3, []string{"1 IDs listed more than once (e.g. b ×2)"}},
		{"an ID missing", [][]string{{"a"}, {"c"}}, 3, []string{"2 different IDs listed, want 3"}},
		{"a repeat hiding a missing ID", [][]string{{"a", "a"}, {"c"}}, 3, []string{"more than once (e.g. a ×2)", "2 different IDs listed, want 3"}},
		{"more IDs than connections", [][]string{{"a", "b", "c", "d"}}, 3, []string{"4 different IDs listed, want 3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tally := NewIDTally()
			for _, p := range tc.pages {
				tally.Add(p)
			}
			err := tally.ExactlyOnce(tc.want)
			if len(tc.fail) == 0 {
				if err != nil {
					t.Fatalf("ExactlyOnce(%d) = %v, want nil", tc.want, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ExactlyOnce(%d) = nil, want %q", tc.want, tc.fail)
			}
			for _, f := range tc.fail {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not say %q", err, f)
				}
			}
		})
	}
}

func TestPageIDsReadsBothListingShapes(t *testing.T) {
	var page listPage
	body := `{"count":2,"connections":[{"connectionId":"Lr0a8Qm1cXk2YbZ_","nodeId":"edge-1"},"Mr0a8Qm1cXk2YbZ_"],"cursor":"x"}`
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	ids, err := PageIDs(page.Connections)
	if err != nil || strings.Join(ids, ",") != "Lr0a8Qm1cXk2YbZ_,Mr0a8Qm1cXk2YbZ_" {
		t.Fatalf("PageIDs = %v, %v", ids, err)
	}
	if _, err := PageIDs([]json.RawMessage{json.RawMessage(`{"nodeId":"edge-1"}`)}); err == nil {
		t.Error("an entry without a connection ID was accepted")
	}
}

func TestTailLinesAreDataLinesOnly(t *testing.T) {
	ev, ok, err := ParseTailLine(`data: {"t":1,"type":"connect","connectionId":"a","dropped":17}`)
	if err != nil || !ok || ev.Type != "connect" || ev.Dropped != 17 {
		t.Errorf("data line = %+v, %v, %v", ev, ok, err)
	}
	for _, l := range []string{"", ": comment", "event: x"} {
		if _, ok, err := ParseTailLine(l); ok || err != nil {
			t.Errorf("%q: ok %v, err %v; want skipped", l, ok, err)
		}
	}
	if _, _, err := ParseTailLine("data: {not json"); err == nil {
		t.Error("a broken data line was accepted")
	}
}

// pagedIDs serves the user listing's shape: ids in pages of size, the
// cursor the next offset; the page at repeatAt also holds its first ID
// again (an SSCAN that repeats a member).
func pagedIDs(t *testing.T, ids []string, size, repeatAt int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		at, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
		end := min(at+size, len(ids))
		page := map[string]any{"connections": append([]string(nil), ids[at:end]...)}
		if at/size == repeatAt {
			page["connections"] = append(page["connections"].([]string), ids[at])
		}
		if end < len(ids) {
			page["cursor"] = strconv.Itoa(end)
		}
		_ = json.NewEncoder(w).Encode(page)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestListingWalksToTheLastPageAndReportsARepeat(t *testing.T) {
	ids := make([]string, 25)
	for i := range ids {
		ids[i] = fmt.Sprintf("id%02d", i)
	}
	clean := scaleAPI{base: pagedIDs(t, ids, 10, -1).URL, token: "tok"}
	l, listed, err := clean.listing(context.Background(), "clean", "/l?limit=10", len(ids), 2, 10, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Problems) != 0 || len(listed) != len(ids) || len(l.Walks) != 2 || l.Walks[0].Pages != 3 || l.Page.Calls != 6 {
		t.Errorf("clean listing: %+v, %d IDs; want 2 walks of 3 pages, every ID once", l, len(listed))
	}

	repeat := scaleAPI{base: pagedIDs(t, ids, 10, 1).URL, token: "tok"}
	l, _, err = repeat.listing(context.Background(), "repeat", "/l?limit=10", len(ids), 1, 10, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Problems) != 1 || !strings.Contains(l.Problems[0], "id10 ×2") {
		t.Errorf("repeated ID: problems %q, want id10 named", l.Problems)
	}

	wrongToken := scaleAPI{base: clean.base, token: "other"}
	if _, _, err := wrongToken.listing(context.Background(), "x", "/l?limit=10", len(ids), 1, 10, &bytes.Buffer{}); err == nil {
		t.Error("a 401 page was not an error")
	}
}

func TestScaleConfigRefusesWhatTheMachineCannotHold(t *testing.T) {
	if err := (ScaleConfig{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, c := range map[string]ScaleConfig{
		"edges over the open-file limit":  {Edges: 5},
		"swload over the open-file limit": {PerProcess: 19000},
		"page over the API's limit":       {Limit: 1001},
		"tagged beyond one process":       {Tagged: 18000},
		"churn beyond one process":        {Churn: 17001},
		"negative timeout":                {Timeout: -time.Second},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

func TestTimingIsTheQuantilesOfTheCallsThatSucceeded(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := timingOf(ds, 3)
	want := Timing{Calls: 103, Errors: 3, P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if got != want {
		t.Errorf("timingOf = %+v, want %+v", got, want)
	}
}

func TestScaleReportSaysWhatFailed(t *testing.T) {
	rep := ScaleReport{Conns: 10, Listings: []ScaleListing{{Name: "cluster", Want: 10, Problems: []string{"walk 1: 9 different IDs listed, want 10"}}},
		Problems: []string{"cluster: walk 1: 9 different IDs listed, want 10"}}
	var b bytes.Buffer
	WriteScaleReport(&b, rep)
	for _, want := range []string{"NO: walk 1: 9 different IDs", "Verdict: FAIL: cluster: walk 1", "GET /@connections/{id}", "Events tail"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestCommandStatsAreCallsByCommand(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_sscan:calls=312,usec=5000,usec_per_call=16.03,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_GET:calls=100000,usec=1,usec_per_call=0.00\r\ncmdstat_client|setname:calls=2,usec=3\r\nnot_a_stat:calls=5\r\n"
	got := ParseCommandStats(info)
	want := map[string]int64{"sscan": 312, "get": 100000, "client|setname": 2}
	if len(got) != len(want) {
		t.Fatalf("ParseCommandStats = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %d calls, want %d", k, got[k], v)
		}
	}
}

// The registry's commands come from a real redis-server: a scan would
// show as "scan".
func TestCommandCallsAreReadFromARealRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	before, err := RedisCommandCalls(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Scan(ctx, 0, "*", 10).Err(); err != nil {
		t.Fatal(err)
	}
	after, err := RedisCommandCalls(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if after["scan"]-before["scan"] != 1 {
		t.Errorf("scan calls %d → %d, want one more", before["scan"], after["scan"])
	}
}
