package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

// lossyProxy relays one TCP connection between a client and an edge, and
// can lose what the edge sends (the edge's writes succeed, nothing
// arrives) and then cut the connection with a reset: a network that goes
// away under a client, as the edge sees it.
type lossyProxy struct {
	ln      net.Listener
	target  string
	losing  atomic.Bool
	lost    atomic.Int64 // bytes from the edge thrown away
	mu      sync.Mutex
	streams []net.Conn
}

func startLossyProxy(t *testing.T, target string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, target: target}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			edge, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			p.mu.Lock()
			p.streams = append(p.streams, client, edge)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(edge, client) }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := edge.Read(buf)
					if n > 0 {
						if p.losing.Load() {
							p.lost.Add(int64(n))
						} else if _, werr := client.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

// cut resets every relayed connection: no close frame, no FIN.
func (p *lossyProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.streams {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	p.streams = nil
}

func (p *lossyProxy) url() string { return "ws://" + p.ln.Addr().String() + "/" }

// wsSession is a gobwas client that counts the messages it receives, the
// way a resuming client does.
type wsSession struct {
	nc       net.Conn
	br       *bufio.Reader
	session  map[string]any
	received int
}

func dialSession(t *testing.T, url string) *wsSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, br, _, err := ws.Dialer{}.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { nc.Close() })
	if br == nil {
		br = bufio.NewReader(nc)
	}
	s := &wsSession{nc: nc, br: br}
	f := s.frame(t)
	if err := json.Unmarshal(f.Payload, &s.session); err != nil || s.session["type"] != "session" {
		t.Fatalf("first frame %q: want the session frame", f.Payload)
	}
	return s
}

func (s *wsSession) frame(t *testing.T) ws.Frame {
	t.Helper()
	_ = s.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	f, err := ws.ReadFrame(s.br)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return f
}

func (s *wsSession) read(t *testing.T) string {
	t.Helper()
	for {
		f := s.frame(t)
		if f.Header.OpCode == ws.OpText || f.Header.OpCode == ws.OpBinary {
			s.received++
			return string(f.Payload)
		}
	}
}

func (s *wsSession) id() string    { v, _ := s.session["connectionId"].(string); return v }
func (s *wsSession) token() string { v, _ := s.session["token"].(string); return v }

// resumeEvents records RESUME events next to CONNECT and DISCONNECT.
type resumeEvents struct {
	*events
	mu      sync.Mutex
	resumes map[string][]*backend.Event
}

func recordResumes(t *testing.T, b *backend.Backend) *resumeEvents {
	ev := &resumeEvents{events: recordEvents(t, b), resumes: map[string][]*backend.Event{}}
	b.OnResume(func(_ context.Context, e *backend.Event) {
		ev.mu.Lock()
		ev.resumes[e.ConnectionID()] = append(ev.resumes[e.ConnectionID()], e)
		ev.mu.Unlock()
	})
	return ev
}

func (ev *resumeEvents) resume(id string) []*backend.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.resumes[id]
}

// A client behind a network that loses what the edge sends and then goes
// away resumes on the same edge (real Redis and NATS) within the window:
// same connection ID, every post and group send made before, during and
// after the cut exactly once and in order, and the backend sees one
// CONNECT, one RESUME and no DISCONNECT.
func TestCutClientResumesWithEveryMessage(t *testing.T) {
	rds := testenv.StartRedis(t)
	ns := testenv.StartNATS(t)
	prefix := "sbresume" + fmt.Sprint(time.Now().UnixNano()%1e6)
	e := startTestEdge(t, testEdgeConfig(t, "-nats-url", ns.URL(), "-redis-url", rds.URL(), "-redis-key-prefix", prefix, "-resume-window", "30s"))
	var ev *resumeEvents
	startBackend(t, ns.URL(), func(b *backend.Backend) {
		ev = recordResumes(t, b)
		b.OnConnect(func(context.Context, *backend.ConnectRequest) backend.ConnectResponse {
			return backend.ConnectResponse{UserID: "u1", Groups: []string{"room"}}
		})
	})
	api, err := connections.New("http://"+e.APIAddr()+"/prod", connections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Every message is numbered; odd ones are posts, even ones group sends.
	sent := 0
	send := func(t *testing.T, id string) string {
		t.Helper()
		sent++
		msg := fmt.Sprintf("m%03d", sent)
		if sent%2 == 1 {
			if err := api.Post(ctx, id, []byte(msg)); err != nil {
				t.Fatalf("post %s: %v", msg, err)
			}
			return msg
		}
		resp, err := http.Post("http://"+e.APIAddr()+"/@groups/room", "text/plain", strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("group send %s: %d", msg, resp.StatusCode)
		}
		return msg
	}
	var got []string

	proxy := startLossyProxy(t, e.WSAddr())
	c := dialSession(t, proxy.url()+"?resume=1")
	id := c.id()
	eventually(t, "CONNECT", func() bool { return ev.connect(id) != nil })
	for i := 0; i < 6; i++ { // before the cut: each arrives before the next is sent
		send(t, id)
		got = append(got, c.read(t))
	}
	// The network starts losing what the edge writes: these are written
	// by the edge and never reach the client.
	proxy.losing.Store(true)
	for i := 0; i < 4; i++ {
		send(t, id)
	}
	eventually(t, "frames lost in flight", func() bool { return proxy.lost.Load() >= 4*6 })
	proxy.cut()
	eventually(t, "detached", func() bool {
		info, err := api.Get(ctx, id)
		return err == nil && info.Detached
	})
	for i := 0; i < 6; i++ { // while detached: accepted and kept
		send(t, id)
	}
	r := dialSession(t, "ws://"+e.WSAddr()+"/?resume="+c.token()+fmt.Sprintf("&received=%d", c.received))
	if r.id() != id || r.session["resumed"] != true || r.session["recovered"] != true {
		t.Fatalf("resume session frame %v", r.session)
	}
	for len(got) < sent {
		got = append(got, r.read(t))
	}
	for i := 0; i < 4; i++ { // after the resume
		send(t, id)
		got = append(got, r.read(t))
	}
	var posts, groups []string
	for _, m := range got {
		var n int
		fmt.Sscanf(m, "m%d", &n)
		if n%2 == 1 {
			posts = append(posts, m)
		} else {
			groups = append(groups, m)
		}
	}
	for i, m := range posts {
		if want := fmt.Sprintf("m%03d", 2*i+1); m != want {
			t.Fatalf("posts arrived as %v: want each once, in order", posts)
		}
	}
	for i, m := range groups {
		if want := fmt.Sprintf("m%03d", 2*i+2); m != want {
			t.Fatalf("group sends arrived as %v: want each once, in order", groups)
		}
	}
	if len(got) != sent {
		t.Fatalf("received %d of %d: %v", len(got), sent, got)
	}
	eventually(t, "RESUME", func() bool { return len(ev.resume(id)) == 1 })
	re := ev.resume(id)[0]
	if re.RequestContext.EventType != "RESUME" || re.Switchboard.DetachedMs <= 0 || re.Switchboard.UserID != "u1" {
		t.Fatalf("RESUME %+v %+v", re.RequestContext, re.Switchboard)
	}
	if d := ev.disconnect(id); len(d) != 0 {
		t.Fatalf("DISCONNECT %v for a resumed connection", d)
	}
	lintMetrics(t, e.Registry())
}

// A client that never comes back: exactly one DISCONNECT when the window
// ends, with the lost socket's 1006 and the reason "detached", and its
// token no longer resumes anything.
func TestDetachedClientThatNeverComesBackGetsOneDisconnect(t *testing.T) {
	rds := testenv.StartRedis(t)
	ns := testenv.StartNATS(t)
	prefix := "sbexpire" + fmt.Sprint(time.Now().UnixNano()%1e6)
	e := startTestEdge(t, testEdgeConfig(t, "-nats-url", ns.URL(), "-redis-url", rds.URL(), "-redis-key-prefix", prefix, "-resume-window", "300ms"))
	var ev *resumeEvents
	startBackend(t, ns.URL(), func(b *backend.Backend) { ev = recordResumes(t, b) })
	proxy := startLossyProxy(t, e.WSAddr())
	c := dialSession(t, proxy.url()+"?resume=1")
	id := c.id()
	eventually(t, "CONNECT", func() bool { return ev.connect(id) != nil })
	proxy.cut()
	eventually(t, "DISCONNECT", func() bool { return len(ev.disconnect(id)) == 1 })
	d := ev.disconnect(id)[0].RequestContext
	if d.DisconnectStatusCode != 1006 || d.DisconnectReason == nil || *d.DisconnectReason != "detached" {
		t.Fatalf("DISCONNECT %d %v, want 1006 detached", d.DisconnectStatusCode, d.DisconnectReason)
	}
	r := dialSession(t, "ws://"+e.WSAddr()+"/?resume="+c.token()+"&received=0")
	if r.id() == id || r.session["recovered"] != false || r.session["reason"] != "unknown" {
		t.Fatalf("resume after the window: %v, want recovered:false and a fresh connection", r.session)
	}
	eventually(t, "CONNECT of the fresh connection", func() bool { return ev.connect(r.id()) != nil })
	if n := len(ev.disconnect(id)); n != 1 || len(ev.resume(id)) != 0 {
		t.Fatalf("%d DISCONNECTs and %d RESUMEs for the expired connection, want 1 and 0", n, len(ev.resume(id)))
	}
}
