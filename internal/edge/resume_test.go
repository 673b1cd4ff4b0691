package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/gobwas/ws/wsutil"
)

// session is a session frame as the client decodes it.
type session struct {
	Type         string `json:"type"`
	ConnectionID string `json:"connectionId"`
	Token        string `json:"token"`
	Resumed      bool   `json:"resumed"`
	Recovered    *bool  `json:"recovered"`
	Reason       string `json:"reason"`
	WindowMs     int64  `json:"resumeWindowMs"`
}

// resumer is a recorder that also hears resumes, and can refuse them.
type resumer struct {
	*recorder
	mu      sync.Mutex
	refuse  error
	resumed map[string][]time.Duration
	queries []string
}

func newResumer() *resumer {
	return &resumer{recorder: newRecorder(), resumed: map[string][]time.Duration{}}
}

func (r *resumer) Connect(ctx context.Context, c *Conn, req *Request) (*Accept, error) {
	r.mu.Lock()
	r.queries = append(r.queries, req.RawQuery+" "+req.URI)
	r.mu.Unlock()
	return r.recorder.Connect(ctx, c, req)
}

func (r *resumer) Resume(_ context.Context, c *Conn, req *Request) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refuse
}

func (r *resumer) Resumed(c *Conn, away time.Duration) {
	r.mu.Lock()
	r.resumed[c.ID()] = append(r.resumed[c.ID()], away)
	r.mu.Unlock()
}

func (r *resumer) resumes(id string) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resumed[id]
}

func (r *resumer) closesOf(id string) []closeEvent {
	r.recorder.mu.Lock()
	defer r.recorder.mu.Unlock()
	var out []closeEvent
	for _, ev := range r.closes {
		if ev.id == id {
			out = append(out, ev)
		}
	}
	return out
}

func resumeConfig() Config {
	return Config{ResumeWindow: time.Minute}
}

// dialSession opens a connection with query and reads its session frame.
func dialSession(t *testing.T, e *testEdge, query string) (*client, session) {
	t.Helper()
	return dialSessionWith(t, e, query, ws.Dialer{})
}

// dialSessionWith is dialSession through d (e.g. offering compression).
func dialSessionWith(t *testing.T, e *testEdge, query string, d ws.Dialer) (*client, session) {
	t.Helper()
	c := dial(t, e.url+"?"+query, d)
	f := c.readFrame(t)
	var s session
	if f.Header.OpCode != ws.OpText || json.Unmarshal(f.Payload, &s) != nil || s.Type != "session" {
		t.Fatalf("first frame %v %q: want the session frame", f.Header.OpCode, f.Payload)
	}
	return c, s
}

// resumeQuery asks to resume s having received n messages.
func resumeQuery(s session, n int) string {
	return fmt.Sprintf("resume=%s&received=%d", s.Token, n)
}

// cut drops the client's TCP connection with a reset, no close frame: what
// a network that goes away looks like to the edge.
func (c *client) cut(t *testing.T) {
	t.Helper()
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// readText reads the next data message.
func (c *client) readText(t *testing.T) string {
	t.Helper()
	for {
		f := c.readFrame(t)
		switch f.Header.OpCode {
		case ws.OpText, ws.OpBinary:
			return string(f.Payload)
		case ws.OpClose:
			t.Fatalf("close frame %q while waiting for a message", f.Payload)
		}
	}
}

func post(t *testing.T, e *testEdge, id, msg string) {
	t.Helper()
	if err := e.Post(context.Background(), id, []byte(msg), false); err != nil {
		t.Fatalf("post %q: %v", msg, err)
	}
}

// waitServed waits until the handshake goroutine of id is done with it:
// only then may a resume take over its live socket.
func waitServed(t *testing.T, e *testEdge, id string) {
	t.Helper()
	eventually(t, id+" served", func() bool {
		c := e.Lookup(id)
		return c != nil && c.has(flagServed)
	})
}

func waitDetached(t *testing.T, e *testEdge, id string) {
	t.Helper()
	eventually(t, id+" detached", func() bool {
		info, err := e.Info(context.Background(), id)
		c := e.Lookup(id)
		return err == nil && info.Detached && c != nil && c.has(flagServed)
	})
}

func TestPlainConnectionsSeeNoSessionFrame(t *testing.T) {
	e := startEdge(t, resumeConfig(), newRecorder())
	c := dial(t, e.url+"?resume=later", ws.Dialer{})
	c.send(t, ws.NewTextFrame([]byte("hi")))
	if got := c.readText(t); got != "hi" {
		t.Fatalf("first frame %q: a connection that did not ask for resume gets its messages only", got)
	}
}

func TestResumableConnectionStartsWithASessionFrame(t *testing.T) {
	rec := newResumer()
	rec.connect = func(ctx context.Context, c *Conn, req *Request) (*Accept, error) {
		_ = c.Send([]byte("posted during $connect"), false)
		return &Accept{}, nil
	}
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "app=1&resume=1")
	if s.ConnectionID == "" || !strings.HasPrefix(s.Token, s.ConnectionID+".") || s.Resumed || s.Recovered != nil || s.WindowMs != 60000 {
		t.Fatalf("session frame %+v", s)
	}
	if got := c.readText(t); got != "posted during $connect" {
		t.Fatalf("after the session frame %q, want the post held during $connect", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.queries) != 1 || rec.queries[0] != "app=1 /?app=1" {
		t.Fatalf("$connect saw query %q: the resume parameters are the edge's, never the backend's", rec.queries)
	}
}

func TestCutConnectionResumesWithEveryMessageOnceInOrder(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	id := s.ConnectionID
	for i := 1; i <= 5; i++ {
		post(t, e, id, fmt.Sprint("m", i))
	}
	// The client reads three; the other two die with its socket.
	for i := 1; i <= 3; i++ {
		if got := c.readText(t); got != fmt.Sprint("m", i) {
			t.Fatalf("got %q, want m%d", got, i)
		}
	}
	c.cut(t)
	waitDetached(t, e, id)
	for i := 6; i <= 8; i++ {
		post(t, e, id, fmt.Sprint("m", i)) // accepted while detached
	}
	c2, s2 := dialSession(t, e, resumeQuery(s, 3))
	if s2.ConnectionID != id || !s2.Resumed || s2.Recovered == nil || !*s2.Recovered || s2.Token == s.Token {
		t.Fatalf("resume session frame %+v: want the same ID, resumed and recovered, a new token", s2)
	}
	post(t, e, id, "m9")
	for i := 4; i <= 9; i++ {
		if got := c2.readText(t); got != fmt.Sprint("m", i) {
			t.Fatalf("after resume got %q, want m%d: every message once, in order", got, i)
		}
	}
	c2.send(t, ws.NewTextFrame([]byte("still here")))
	if got := c2.readText(t); got != "still here" {
		t.Fatalf("echo on the resumed socket: %q", got)
	}
	// The new socket is kept as lean as a new connection's.
	if conn := e.Lookup(id); conn == nil {
		t.Fatal("resumed connection not in the hub")
	} else {
		conn.mu.Lock()
		nc := conn.nc
		conn.mu.Unlock()
		if _, ok := nc.(*fdSocket); !ok {
			t.Fatalf("resumed socket held as %T, want the bare descriptor", nc)
		}
	}
	eventually(t, "Resumed", func() bool { return len(rec.resumes(id)) == 1 })
	if away := rec.resumes(id); len(away) != 1 || away[0] <= 0 {
		t.Fatalf("Resumed calls %v, want one with the time away", away)
	}
	if closes := rec.closesOf(id); len(closes) != 0 {
		t.Fatalf("Close reported %v: a resumed connection has not ended", closes)
	}
	if n := metric(t, e.resume.resumes); n != 1 {
		t.Fatalf("switchboard_resumes_total %v, want 1", n)
	}
	if n := metric(t, e.resume.replayed); n != 5 {
		t.Fatalf("switchboard_resume_replayed_total %v, want 5 (m4..m8)", n)
	}
	if n := metric(t, e.resume.detached); n != 0 {
		t.Fatalf("switchboard_resume_detached %v after the resume", n)
	}
}

func TestResumeWindowEndGivesExactlyOneClose(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, Config{ResumeWindow: 200 * time.Millisecond}, rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	c.cut(t)
	ev := rec.waitClose(t)
	if ev.id != s.ConnectionID || ev.code != CodeAbnormal || ev.reason != "detached" || ev.why != ReasonDetached || !ev.established {
		t.Fatalf("close %+v: want the lost socket's 1006 with reason detached", ev)
	}
	if _, err := e.Info(context.Background(), s.ConnectionID); !errors.Is(err, errGoneForTest()) {
		t.Fatalf("Info after the window: %v, want gone", err)
	}
	_, s2 := dialSession(t, e, resumeQuery(s, 0))
	if s2.Resumed || s2.Recovered == nil || *s2.Recovered || s2.Reason != failUnknown || s2.ConnectionID == s.ConnectionID {
		t.Fatalf("resume after the window: %+v, want recovered:false (unknown) and a fresh ID", s2)
	}
	if closes := rec.closesOf(s.ConnectionID); len(closes) != 1 {
		t.Fatalf("closes %v, want exactly one", closes)
	}
}

func TestForgedAndUsedTokensGetAFreshConnection(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)

	forged := session{Token: s.ConnectionID + "." + strings.Repeat("A", 22)}
	_, f := dialSession(t, e, resumeQuery(forged, 0))
	if f.Resumed || f.Recovered == nil || *f.Recovered || f.Reason != failUnknown || f.ConnectionID == s.ConnectionID {
		t.Fatalf("forged token: %+v, want recovered:false (unknown: no oracle for live IDs), a fresh ID", f)
	}
	waitDetached(t, e, s.ConnectionID) // a forgery does not touch the real one

	_, ok := dialSession(t, e, resumeQuery(s, 0))
	if !ok.Resumed || ok.ConnectionID != s.ConnectionID {
		t.Fatalf("genuine resume after a forgery: %+v", ok)
	}
	_, used := dialSession(t, e, resumeQuery(s, 0))
	if used.Resumed || used.Reason != failUnknown || used.ConnectionID == s.ConnectionID {
		t.Fatalf("used token: %+v, want recovered:false (unknown)", used)
	}
	unknown := session{Token: "AAAAAAAAAAAAAAAA." + strings.Repeat("A", 22)}
	_, u := dialSession(t, e, resumeQuery(unknown, 0))
	if u.Reason != failUnknown {
		t.Fatalf("token of no connection: %+v, want recovered:false (unknown)", u)
	}
	if n := metric(t, e.resume.failures.WithLabelValues(failToken)); n != 2 {
		t.Fatalf("failures{reason=token} %v, want 2", n)
	}
}

func TestGapEndsTheOldConnectionAndSaysSo(t *testing.T) {
	rec := newResumer()
	cfg := resumeConfig()
	cfg.ResumeReplayBytes = 400
	e := startEdgeWith(t, cfg, rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	for i := 0; i < 10; i++ {
		post(t, e, s.ConnectionID, strings.Repeat("x", 100))
	}
	// Written to the socket (and so evictable), though never read.
	eventually(t, "the write queue empty", func() bool {
		lc := e.Lookup(s.ConnectionID)
		lc.mu.Lock()
		defer lc.mu.Unlock()
		return !lc.out.busy()
	})
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)
	_, g := dialSession(t, e, resumeQuery(s, 0))
	if g.Resumed || g.Reason != failGap || g.ConnectionID == s.ConnectionID {
		t.Fatalf("resume past the replay window: %+v, want recovered:false (gap)", g)
	}
	closes := rec.closesOf(s.ConnectionID)
	if len(closes) != 1 || closes[0].why != ReasonDetached || closes[0].code != CodeAbnormal {
		t.Fatalf("closes %+v: the unrecoverable connection ends at once, once", closes)
	}
}

func TestReceivedBeyondWhatWasSentIsRefused(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	post(t, e, s.ConnectionID, "one")
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)
	_, r := dialSession(t, e, resumeQuery(s, 2))
	if r.Resumed || r.Reason != failReceived {
		t.Fatalf("received=2 of 1 sent: %+v, want recovered:false (received)", r)
	}
}

func TestDetachedQueueIsBounded(t *testing.T) {
	rec := newResumer()
	cfg := Config{ResumeWindow: time.Minute, MaxFrameBytes: 1000, MaxMessageBytes: 1000, MaxQueueBytes: 4000}
	e := startEdgeWith(t, cfg, rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)
	msg := []byte(strings.Repeat("q", 900))
	var err error
	n := 0
	for ; n < 10 && err == nil; n++ {
		err = e.Post(context.Background(), s.ConnectionID, msg, false)
	}
	if !errors.Is(err, errGoneForTest()) || n != 5 {
		t.Fatalf("post %d while detached: %v; want four kept (4×(902+32) ≤ 4000) and the fifth to end it", n, err)
	}
	ev := rec.waitClose(t)
	if ev.id != s.ConnectionID || ev.code != CodePolicy || ev.reason != "detached queue full" || ev.why != ReasonSlowConsumer {
		t.Fatalf("close %+v", ev)
	}
}

func TestResumeTakesOverASocketTheEdgeStillThinksAlive(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	old, s := dialSession(t, e, "resume=1")
	waitServed(t, e, s.ConnectionID)
	post(t, e, s.ConnectionID, "a")
	// The client moved network: the old socket is still up as far as the
	// edge knows, and the client never read "a".
	c2, s2 := dialSession(t, e, resumeQuery(s, 0))
	if !s2.Resumed || s2.ConnectionID != s.ConnectionID {
		t.Fatalf("resume of a live connection: %+v", s2)
	}
	if got := c2.readText(t); got != "a" {
		t.Fatalf("replayed %q, want a", got)
	}
	// The old socket is cut (its frames so far may still arrive).
	_ = old.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := ws.ReadFrame(old.br); err != nil {
			break
		}
	}
	if closes := rec.closesOf(s.ConnectionID); len(closes) != 0 {
		t.Fatalf("closes %v", closes)
	}
}

func TestRefusedResumeLeavesTheConnectionDetached(t *testing.T) {
	rec := newResumer()
	rec.refuse = &Reject{Status: http.StatusUnauthorized, Reason: "token expired"}
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)
	_, err := tryDial(e.url+"?"+resumeQuery(s, 0), ws.Dialer{})
	var status ws.StatusError
	if !errors.As(err, &status) || int(status) != http.StatusUnauthorized {
		t.Fatalf("refused resume: %v, want HTTP 401", err)
	}
	waitDetached(t, e, s.ConnectionID)
	rec.mu.Lock()
	rec.refuse = nil
	rec.mu.Unlock()
	_, ok := dialSession(t, e, resumeQuery(s, 0))
	if !ok.Resumed || ok.ConnectionID != s.ConnectionID {
		t.Fatalf("resume once the credentials are good again: %+v", ok)
	}
}

func TestDeleteEndsADetachedConnectionAtOnce(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)
	if err := e.Close(context.Background(), s.ConnectionID, 4000, "bye"); err != nil {
		t.Fatal(err)
	}
	ev := rec.waitClose(t)
	if ev.id != s.ConnectionID || ev.code != 4000 || ev.reason != "bye" {
		t.Fatalf("close %+v, want DELETE's code and reason", ev)
	}
}

func TestClientCloseFrameIsNotADetach(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	if err := wsutil.WriteClientMessage(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "done")); err != nil {
		t.Fatal(err)
	}
	ev := rec.waitClose(t)
	if ev.id != s.ConnectionID || ev.code != CodeNormal || ev.why != ReasonClientClose {
		t.Fatalf("close %+v: a close handshake ends the connection as before", ev)
	}
}

// BenchmarkIdleConnBytes reports (as B/op) what the edge allocates for an
// idle connection's own state, plain and resumable: a connection that did
// not ask for resume pays nothing for it (the Conn's size class is the
// same), a resumable one its resume state. In-process; socket buffers and
// the Handler's state are not included.
func BenchmarkIdleConnBytes(b *testing.B) {
	var sink *Conn
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink = &Conn{id: "AAAAAAAAAAAAAAAA"}
		}
	})
	b.Run("resumable", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink = &Conn{id: "AAAAAAAAAAAAAAAA"}
			sink.rs = newResumable(sink.id, "")
			sink.rs.token = "" // sent in the session frame, then dropped
		}
	})
	_ = sink
}

// BenchmarkSendResumable is BenchmarkSend for a resumable connection: each
// message is also kept in the replay window.
func BenchmarkSendResumable(b *testing.B) {
	rec := newRecorder()
	s := newFuzzServer(b, rec)
	s.cfg.ResumeWindow = time.Minute
	c, cleanup := fuzzConn(b, s, rec)
	defer cleanup()
	c.rs = newResumable(c.id, "")
	msg := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Send(msg, false); err != nil {
			b.Fatal(err)
		}
		if i%256 == 255 {
			for backlog(c) > 0 {
				runtime.Gosched()
			}
		}
	}
}

// The replay window keeps the newest messages within its bound, drops the
// oldest first, and never copies one larger than the whole window.
func TestReplayWindowKeepsTheNewestWithinItsBound(t *testing.T) {
	r := newResumable("AAAAAAAAAAAAAAAA", "")
	hdr := []byte{0x81, 100}
	body := make([]byte, 100)
	const bound = 3 * (102 + frameCharge)
	for i := 0; i < 10; i++ {
		r.record(hdr, body, bound, 1<<20, 0)
	}
	if r.first != 8 || r.next != 11 || len(r.frames) != 3 || r.kept != bound {
		t.Fatalf("window first=%d next=%d frames=%d kept=%d, want messages 8..10", r.first, r.next, len(r.frames), r.kept)
	}
	if r.gap(6) != failGap || r.gap(7) != "" || r.gap(10) != "" || r.gap(11) != failReceived {
		t.Fatal("gap: received 7..10 are recoverable, 6 is not, 11 was never sent")
	}
	// With a backlog, nothing unwritten is evicted: five messages wait in
	// the write queue (510 bytes), so all five newest stay, past the bound.
	for i := 0; i < 5; i++ {
		r.record(hdr, body, bound, 1<<20, i*102)
	}
	if r.first != 11 || len(r.frames) != 5 {
		t.Fatalf("with a backlog: first=%d frames=%d, want the 5 unwritten messages 11..15 kept", r.first, len(r.frames))
	}
	r.trim(bound, 0) // the writer drained the queue
	if r.first != 13 || len(r.frames) != 3 {
		t.Fatalf("after the backlog was written: first=%d frames=%d, want 13..15", r.first, len(r.frames))
	}
	// Detached, messages queue up to the queue bound and are never evicted.
	r.detachedAt = 1
	for i := 0; i < 3; i++ {
		if !r.record(hdr, body, 0, bound, 0) {
			t.Fatalf("queued message %d refused within the bound", i)
		}
	}
	if r.record(hdr, body, 0, bound, 0) {
		t.Fatal("a message past the queue bound was kept")
	}
	if got := r.replay(15); len(got) != 3 || r.first != 16 {
		t.Fatalf("replay after 15: %d messages from %d, want the 3 queued", len(got), r.first)
	}
}

// A stream of posts that never pauses, through two cuts: the client sees
// every message once, in order, whatever the cuts interrupted (a write on
// its way, the writer goroutine, a partial frame).
func TestPostsDuringRepeatedCutsArriveOnceInOrder(t *testing.T) {
	rec := newResumer()
	cfg := resumeConfig()
	// Room for the whole stream: what loopback's socket buffers hold in
	// flight is not this test's subject (TestGapEndsTheOldConnection... is).
	cfg.ResumeReplayBytes = 1 << 20
	e := startEdgeWith(t, cfg, rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	const total = 3000
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			if err := e.Post(context.Background(), s.ConnectionID, []byte(fmt.Sprint(i)), false); err != nil {
				done <- fmt.Errorf("post %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	received := 0
	for _, cutAt := range []int{500, 1700, total} {
		for received < cutAt {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := ws.ReadFrame(c.br)
			if err != nil {
				select {
				case perr := <-done:
					lc := e.Lookup(s.ConnectionID)
					ph := "none"
					if lc != nil {
						ph = lc.phase().String()
					}
					t.Fatalf("after %d messages: read: %v; the poster ended with %v; phase %s, closes %+v", received, err, perr, ph, rec.closesOf(s.ConnectionID))
				default:
					t.Fatalf("after %d messages: read: %v; the poster still runs", received, err)
				}
			}
			if got, want := string(f.Payload), fmt.Sprint(received+1); got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
			received++
		}
		if cutAt == total {
			break
		}
		c.cut(t)
		waitDetached(t, e, s.ConnectionID)
		var s2 session
		c, s2 = dialSession(t, e, resumeQuery(s, received))
		if !s2.Resumed || s2.ConnectionID != s.ConnectionID {
			t.Fatalf("resume after %d: %+v", received, s2)
		}
		s.Token = s2.Token
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Resumed may still be running while the replay is already written.
	eventually(t, "two Resumed calls", func() bool { return len(rec.resumes(s.ConnectionID)) == 2 })
}

func TestParseResumeTakesOnlyItsOwnParameters(t *testing.T) {
	tok := "AAAAAAAAAAAAAAAA." + strings.Repeat("b", 22)
	for _, tc := range []struct {
		query, rest string
		want        resumeAsk
	}{
		{"", "", resumeAsk{}},
		{"a=1", "a=1", resumeAsk{}},
		{"resume=1", "", resumeAsk{resumable: true}},
		{"a=1&resume=1&b=2", "a=1&b=2", resumeAsk{resumable: true}},
		{"resume=yes&received=3", "resume=yes&received=3", resumeAsk{}},   // the application's
		{"resume=1&received=3", "received=3", resumeAsk{resumable: true}}, // no token: not ours
		{"resume=" + tok + "&received=7", "", resumeAsk{resumable: true, id: "AAAAAAAAAAAAAAAA", secret: strings.Repeat("b", 22), received: 7}},
		{"resume=" + tok, "", resumeAsk{resumable: true, id: "AAAAAAAAAAAAAAAA", secret: strings.Repeat("b", 22), badCount: true}},
		{"resume=" + tok + "&received=-1", "", resumeAsk{resumable: true, id: "AAAAAAAAAAAAAAAA", secret: strings.Repeat("b", 22), badCount: true}},
		{"resume=" + tok[:30], "resume=" + tok[:30], resumeAsk{}}, // not token-shaped
		{"resume=AAAAAAAAAAAAAAA%." + strings.Repeat("b", 22), "resume=AAAAAAAAAAAAAAA%." + strings.Repeat("b", 22), resumeAsk{}},
	} {
		r := &Request{Path: "/ws", RawQuery: tc.query, URI: "/ws?" + tc.query}
		got := parseResume(r)
		if got != tc.want || (got.resumable && r.RawQuery != tc.rest) {
			t.Errorf("%q: %+v, query %q; want %+v, query %q", tc.query, got, r.RawQuery, tc.want, tc.rest)
		}
		if got.resumable && strings.Contains(r.URI, "resume=") {
			t.Errorf("%q: URI %q still carries the token", tc.query, r.URI)
		}
	}
}

// With -resume-window 0 a client that asks still gets its session frame,
// without a token, and a resume is told why it failed.
func TestResumeOffStillAnswersTheClient(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, Config{}, rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	if s.Token != "" || s.WindowMs != 0 || s.Resumed {
		t.Fatalf("session frame with resume off: %+v, want no token and a zero window", s)
	}
	c.cut(t)
	if ev := rec.waitClose(t); ev.id != s.ConnectionID || ev.why != ReasonPeerGone {
		t.Fatalf("close %+v: with resume off a lost socket ends the connection at once", ev)
	}
	forged := session{Token: s.ConnectionID + "." + strings.Repeat("A", 22)}
	_, r := dialSession(t, e, resumeQuery(forged, 0))
	if r.Resumed || r.Reason != failDisabled {
		t.Fatalf("resume with resume off: %+v, want recovered:false (disabled)", r)
	}
}

// A fan-out Frame may carry several messages in one write: the client
// counts each, and so does the edge.
func TestFanoutFrameMessagesAreCountedOneByOne(t *testing.T) {
	rec := newResumer()
	e := startEdgeWith(t, resumeConfig(), rec, rec.recorder)
	c, s := dialSession(t, e, "resume=1")
	var f Frame
	for _, m := range []string{"f1", "f2", "f3"} {
		f.Append(false, []byte(m))
	}
	if err := e.Lookup(s.ConnectionID).SendFrame(&f); err != nil {
		t.Fatal(err)
	}
	if got := c.readText(t); got != "f1" {
		t.Fatalf("got %q, want f1", got)
	}
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)
	post(t, e, s.ConnectionID, "p4")
	c2, s2 := dialSession(t, e, resumeQuery(s, 1))
	if !s2.Resumed {
		t.Fatalf("resume: %+v", s2)
	}
	for _, want := range []string{"f2", "f3", "p4"} {
		if got := c2.readText(t); got != want {
			t.Fatalf("after resume got %q, want %q", got, want)
		}
	}
}

// A connection that negotiated permessage-deflate keeps compressed
// messages: its resume must negotiate the extension again, and then gets
// them as they were kept.
func TestResumeOfACompressedConnectionNegotiatesItAgain(t *testing.T) {
	rec := newResumer()
	cfg := deflateConfig()
	cfg.ResumeWindow = time.Minute
	e := startEdgeWith(t, cfg, rec, rec.recorder)
	d := deflateDialer(wsflate.DefaultParameters)
	c, s := dialSessionWith(t, e, "resume=1", d)
	big := strings.Repeat("compress me, ", 100)
	post(t, e, s.ConnectionID, big)
	if got, compressed, _ := c.readMessage(t); !compressed || string(got) != big {
		t.Fatalf("before the cut: compressed %v, %d bytes", compressed, len(got))
	}
	c.cut(t)
	waitDetached(t, e, s.ConnectionID)
	post(t, e, s.ConnectionID, big+"again")
	_, err := tryDial(e.url+"?"+resumeQuery(s, 1), ws.Dialer{})
	var status ws.StatusError
	if !errors.As(err, &status) || int(status) != http.StatusBadRequest {
		t.Fatalf("resume without the extension: %v, want HTTP 400", err)
	}
	waitDetached(t, e, s.ConnectionID)
	c2, s2 := dialSessionWith(t, e, resumeQuery(s, 1), d)
	if !s2.Resumed || s2.ConnectionID != s.ConnectionID {
		t.Fatalf("resume offering the extension: %+v", s2)
	}
	if got, compressed, _ := c2.readMessage(t); !compressed || string(got) != big+"again" {
		t.Fatalf("after the resume: compressed %v, %q…", compressed, got[:min(len(got), 20)])
	}
}
