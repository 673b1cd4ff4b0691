package edge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// Resumer is a Handler that takes part in session resume (docs/resume.md).
// A Handler that is not one resumes connections without being asked.
type Resumer interface {
	// Resume runs during a resume handshake for c, detached and claimed by
	// this handshake, before the 101: credentials and rates are checked
	// again here. An error refuses the upgrade as Connect's does (*Reject
	// for its status); c stays detached, its token still valid.
	Resume(ctx context.Context, c *Conn, r *Request) error
	// Resumed runs after the 101 of a successful resume, before a frame
	// from the new socket is read; away is how long c was detached.
	Resumed(c *Conn, away time.Duration)
}

// Resumable reports whether the client asked for resume (?resume=).
func (c *Conn) Resumable() bool { return c.rs != nil }

// SetResumeSubject binds c's resume to subject, such as the user its JWT
// named, for the Handler to compare on resume (ResumeSubject). It does
// nothing for a connection that is not resumable.
func (c *Conn) SetResumeSubject(subject string) {
	c.mu.Lock()
	if c.rs != nil {
		c.rs.subject = subject
	}
	c.mu.Unlock()
}

// ResumeSubject is what SetResumeSubject bound c's resume to.
func (c *Conn) ResumeSubject() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rs == nil {
		return ""
	}
	return c.rs.subject
}

// Query parameters of the upgrade request that ask for resume.
const (
	paramResume   = "resume"
	paramReceived = "received"
)

// frameCharge is what each message kept for resume costs on top of its
// bytes: its slice header and allocation rounding. It makes the byte bounds
// bound the number of messages too.
const frameCharge = 32

// secretBytes is the random part of a resume token (128 bits).
const secretBytes = 16

// Reasons for recovered:false (the reason label of
// switchboard_resume_failures_total and the session frame's reason).
const (
	failUnknown  = "unknown"  // no detached connection with that ID here
	failToken    = "token"    // the secret does not match: forged or used
	failGap      = "gap"      // missed messages are no longer kept
	failReceived = "received" // received is not a count the edge could have sent
	failDisabled = "disabled" // -resume-window 0
)

var failReasons = []string{failUnknown, failToken, failGap, failReceived, failDisabled}

// clientReason is the reason the client is told: a secret that does not
// match is "unknown" to it, like an ID that is not here, so that knowing a
// connection's ID does not tell whether it is live and resumable on this
// node. The metric keeps them apart.
func clientReason(failure string) string {
	if failure == failToken {
		return failUnknown
	}
	return failure
}

// resumable is the resume state of a connection that asked for it
// (Conn.rs; nil for every other connection, which pays one pointer). It is
// guarded by Conn.mu.
//
// The messages sent to the client are numbered from 1 for the connection's
// whole life. frames holds the most recent ones, seq first..next-1: while
// the socket is up, up to the replay bound (what the client may have lost
// in flight); while detached, also every message sent since (the queue,
// up to MaxQueueBytes), which is never evicted: not fitting ends the
// connection instead.
type resumable struct {
	digest  [32]byte // SHA-256 of the current token's secret
	claimed bool     // a resume handshake owns the detached connection: its token is spent

	first, next uint64   // seq of frames[0]; seq the next message gets
	frames      [][]byte // complete frames, header included
	kept        int      // bytes charged for frames (frameCharge each)
	raw         int      // their bytes alone
	queued      int      // bytes charged for frames sent while detached
	credit      int      // bytes replayed at the last resume: the write queue may hold them above its bound

	detachedAt int64      // unix nanos; 0 while attached
	detachCode closeCause // how the socket ended: the code of the eventual DISCONNECT

	subject string // what the Handler bound the resume to (SetResumeSubject)

	// The next session frame's content; token is cleared once it is sent.
	token   string
	resumed bool
	failure string // recovered:false reason on a fresh connection that asked to resume
}

// newResumable starts the resume state of connection id, with its first token.
func newResumable(id, failure string) *resumable {
	r := &resumable{first: 1, next: 1, failure: failure}
	r.token = r.issue(id)
	return r
}

// issue makes a new token for connection id and keeps only its digest.
func (r *resumable) issue(id string) string {
	var b [secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("edge: crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	secret := base64.RawURLEncoding.EncodeToString(b[:])
	r.digest = sha256.Sum256([]byte(secret))
	return id + "." + secret
}

// matches reports whether secret is the current token's, in constant time.
func (r *resumable) matches(secret string) bool {
	d := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(d[:], r.digest[:]) == 1
}

// record keeps a copy of a message sent to the client (a+b, a complete
// frame); unwritten is how many bytes wait in the write queue before it.
// While attached it then evicts the oldest messages beyond replayBound, but
// only those surely written (trim); while detached it refuses (false) a
// message that would take the queue past queueBound.
func (r *resumable) record(a, b []byte, replayBound, queueBound, unwritten int) bool {
	size := len(a) + len(b)
	charge := size + frameCharge
	detached := r.detachedAt != 0
	if detached && r.queued+charge > queueBound {
		return false
	}
	f := make([]byte, 0, size)
	r.frames = append(r.frames, append(append(f, a...), b...))
	r.kept += charge
	r.raw += size
	r.next++
	if detached {
		r.queued += charge
		return true
	}
	r.trim(replayBound, unwritten+size)
	return true
}

// trim evicts the oldest messages while more than bound is kept, as long as
// the one to go was written in full. unwritten is how many bytes the write
// queue holds: the stream is in order, so a message followed by at least
// that many bytes of newer messages has left the queue. Messages not yet
// written are never evicted (the queue bounds them): a socket lost with a
// backlog loses nothing.
func (r *resumable) trim(bound, unwritten int) {
	for r.kept > bound && len(r.frames) > 0 && r.raw-len(r.frames[0]) >= unwritten {
		r.dropFirst()
	}
}

func (r *resumable) dropFirst() {
	r.kept -= len(r.frames[0]) + frameCharge
	r.raw -= len(r.frames[0])
	r.frames[0] = nil
	r.frames = r.frames[1:]
	r.first++
}

// gap checks received against what was sent: "" when every message after
// it is still kept, else the recovered:false reason.
func (r *resumable) gap(received uint64) string {
	switch {
	case received >= r.next:
		return failReceived
	case received+1 < r.first:
		return failGap
	}
	return ""
}

// replay drops what the client confirmed and returns the frames it has not
// received, oldest first. They stay kept: they are unwritten again until
// the new socket takes them.
func (r *resumable) replay(received uint64) [][]byte {
	for r.first <= received && len(r.frames) > 0 {
		r.dropFirst()
	}
	r.queued = 0
	return slices.Clone(r.frames)
}

// appendSessionFrame appends the session frame (a text frame, not counted
// as a message) announcing token to dst.
func (r *resumable) appendSessionFrame(dst []byte, id, token string, window time.Duration) []byte {
	p := make([]byte, 0, 160)
	p = append(p, `{"type":"session","connectionId":"`...)
	p = append(p, id...) // IDs and tokens are base64url: nothing to escape
	if window > 0 {      // with resume off the token would never be accepted
		p = append(p, `","token":"`...)
		p = append(p, token...)
	}
	p = append(p, `","resumed":`...)
	p = strconv.AppendBool(p, r.resumed)
	switch {
	case r.resumed:
		p = append(p, `,"recovered":true`...)
	case r.failure != "":
		p = append(p, `,"recovered":false,"reason":"`...)
		p = append(p, r.failure...)
		p = append(p, '"')
	}
	p = append(p, `,"resumeWindowMs":`...)
	p = strconv.AppendInt(p, window.Milliseconds(), 10)
	p = append(p, '}')
	return append(appendHeader(dst, true, opText, len(p)), p...)
}

// resumeAsk is what an upgrade request asks of resume.
type resumeAsk struct {
	resumable bool   // resume=1, or a resume that falls back to a fresh connection
	id        string // the token's connection ID; "" unless resuming
	secret    string
	received  uint64
	badCount  bool // received missing or not a number
}

// parseResume reads the resume parameters of r and takes them out of its
// query, so that $connect and its events never see a token. A resume value
// that is neither 1 nor shaped like a token is the application's and stays.
func parseResume(r *Request) resumeAsk {
	var ask resumeAsk
	if !strings.Contains(r.RawQuery, paramResume+"=") {
		return ask
	}
	var kept []string
	var received string
	for _, kv := range strings.Split(r.RawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == paramResume && v == "1":
			ask.resumable = true
		case k == paramResume && tokenShaped(v):
			ask.resumable = true
			ask.id, ask.secret, _ = strings.Cut(v, ".")
		case k == paramReceived:
			received = v
		default:
			kept = append(kept, kv)
		}
	}
	if !ask.resumable {
		return resumeAsk{}
	}
	if received != "" && ask.id == "" {
		kept = append(kept, paramReceived+"="+received) // not ours without a token
	}
	if ask.id != "" {
		n, err := strconv.ParseUint(received, 10, 64)
		ask.received, ask.badCount = n, err != nil
	}
	r.RawQuery = strings.Join(kept, "&")
	r.URI = r.Path
	if r.RawQuery != "" {
		r.URI += "?" + r.RawQuery
	}
	return ask
}

// tokenShaped reports whether v looks like a token: a connection ID, a dot,
// and a base64url secret of secretBytes.
func tokenShaped(v string) bool {
	id, secret, ok := strings.Cut(v, ".")
	return ok && conn.ValidID(id) && len(secret) == base64.RawURLEncoding.EncodedLen(secretBytes) &&
		strings.Trim(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}

type resumeMetrics struct {
	detached prometheus.Gauge
	detaches prometheus.Counter
	resumes  prometheus.Counter
	failures *prometheus.CounterVec
	replayed prometheus.Counter
	relayed  prometheus.Counter
}

func newResumeMetrics(reg prometheus.Registerer) *resumeMetrics {
	f := promauto.With(reg)
	m := &resumeMetrics{
		detached: f.NewGauge(prometheus.GaugeOpts{Name: "switchboard_resume_detached",
			Help: "Resumable connections detached now: socket lost, waiting for their client within -resume-window (also counted in switchboard_connections)."}),
		detaches: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_resume_detaches_total",
			Help: "Sockets of resumable connections lost without a close handshake (the connection was detached)."}),
		resumes: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_resumes_total",
			Help: "Connections resumed with their token: same ID, nothing lost."}),
		failures: f.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_resume_failures_total",
			Help: "Resume requests answered recovered:false with a fresh connection, by reason (unknown, token, gap, received, disabled)."}, []string{"reason"}),
		replayed: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_resume_replayed_total",
			Help: "Messages sent again on resume: lost in flight or queued while detached."}),
		relayed: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_resume_relayed_total",
			Help: "Resumes this edge received for a connection another node holds, relayed to that node (counted in switchboard_resumes_total there)."}),
	}
	for _, r := range failReasons {
		m.failures.WithLabelValues(r)
	}
	return m
}
