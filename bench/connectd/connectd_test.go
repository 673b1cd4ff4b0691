package connectd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

func TestCentrifugoConnectProxyAllowsAnAnonymousUser(t *testing.T) {
	srv := httptest.NewServer(ProxyHandler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/centrifugo/connect", "application/json",
		strings.NewReader(`{"client":"c1","transport":"websocket","protocol":"json","encoding":"json"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply struct {
		Result *struct {
			User *string `json:"user"`
		} `json:"result"`
		Error *json.RawMessage `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || reply.Error != nil || reply.Result == nil || reply.Result.User == nil || *reply.Result.User != "" {
		t.Errorf("status %d, reply %+v: want a result with the empty user", resp.StatusCode, reply)
	}
}

// syncBuffer is a stderr that the test reads while connectd writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSwitchboardConnectIsAllowedAsTheUserAndIntoTheGroupOfItsQuery(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- CLI(ctx, []string{"-nats", n.URL(), "-prefix", "bench"}, &stderr) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("connectd: %v", err)
		}
	}()
	testenv.Eventually(t, "connectd ready", func() bool { return strings.Contains(stderr.String(), ReadyLine) })

	nc := n.Connect(t)
	subj := protocol.NewSubjects("bench").Connect
	for _, c := range []struct {
		query string
		want  []string
		user  string
	}{{`{"group":"fan"}`, []string{"fan"}, ""}, {`{"user":"u1","group":"g"}`, []string{"g"}, "u1"}, {`{}`, nil, ""}} {
		req := []byte(`{"requestContext":{"routeKey":"$connect","eventType":"CONNECT","connectionId":"c1"},"queryStringParameters":` + c.query + `}`)
		m, err := nc.Request(subj, req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var reply protocol.ConnectReply
		if err := json.Unmarshal(m.Data, &reply); err != nil {
			t.Fatal(err)
		}
		if reply.StatusCode >= 300 || strings.Join(reply.Groups, ",") != strings.Join(c.want, ",") || reply.UserID != c.user {
			t.Errorf("query %s: reply %s, want allowed as user %q into %v", c.query, m.Data, c.user, c.want)
		}
	}
}

func TestOneModeAtATime(t *testing.T) {
	for _, args := range [][]string{nil, {"-nats", "nats://127.0.0.1:1", "-http", "127.0.0.1:1"}, {"-http", "0.0.0.0:8000"}} {
		if err := CLI(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
