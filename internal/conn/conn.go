// Package conn holds what every part of a node agrees on about a WebSocket
// connection: its ID, the facts reported about it, the errors a command on it
// can fail with, and the Controller interface through which the @connections
// API, the cluster router and the edge's own hub reach it.
package conn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"github.com/switchboardgw/switchboard/internal/rules"
)

// Errors a command on a connection can fail with. Callers match them with
// errors.Is; transports (HTTP, NATS) map them to status codes and back.
var (
	// ErrGone: no such connection, or it has closed (HTTP 410 GoneException).
	ErrGone = errors.New("connection gone")
	// ErrBufferFull: the client is not reading fast enough and its send
	// queue is full (HTTP 429 LimitExceededException, which the AWS SDK retries).
	ErrBufferFull = errors.New("client send buffer full")
	// ErrTooLarge: the message exceeds the maximum message size (HTTP 413).
	ErrTooLarge = errors.New("message too large")
	// ErrInvalidID: the string cannot be a connection ID (HTTP 400).
	ErrInvalidID = errors.New("invalid connection id")
	// ErrInvalidCloseCode: a close code or reason a server may not send
	// (HTTP 400); see rules.CheckClose.
	ErrInvalidCloseCode = rules.ErrInvalidClose
	// ErrUnavailable: the owner could not be reached in time (HTTP 503/504).
	ErrUnavailable = errors.New("connection owner unavailable")
	// ErrInvalidState: connection state that is not a JSON object within
	// MaxState bytes (HTTP 400).
	ErrInvalidState = errors.New("invalid connection state")
	// ErrInvalidName: not a legal group or user name (HTTP 400).
	ErrInvalidName = errors.New("invalid group or user name")
	// ErrTooManyGroups: the connection is in the maximum number of groups
	// (HTTP 409).
	ErrTooManyGroups = errors.New("connection is in too many groups")
)

// MaxState bounds a connection's state, in bytes of JSON: API Gateway's
// authorizer result limit.
const MaxState = 8 << 10

// StateSetter is implemented by Controllers that can replace the state a
// connection carries on its later events (the authorizer context set by
// $connect). An extension over API Gateway, which has no session state.
type StateSetter interface {
	SetState(ctx context.Context, id string, state json.RawMessage) error
}

// ValidState reports whether state may be a connection's state: a JSON
// object of at most MaxState bytes.
func ValidState(state []byte) bool {
	if len(state) == 0 || len(state) > MaxState || !json.Valid(state) {
		return false
	}
	for _, b := range state {
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// Info is what GET /@connections/{id} reports, plus Switchboard's extensions.
type Info struct {
	ID           string    `json:"connectionId"`
	Node         string    `json:"nodeId"`
	ConnectedAt  time.Time `json:"connectedAt"`
	LastActiveAt time.Time `json:"lastActiveAt"`
	SourceIP     string    `json:"sourceIp"`
	UserAgent    string    `json:"userAgent"`
	UserID       string    `json:"userId,omitempty"`
	// Principal is the connection's state (the authorizer context $connect
	// set, or PUT replaced): a JSON object of at most MaxState bytes.
	Principal json.RawMessage `json:"principal,omitempty"`
	// Groups are the groups the connection is in on its node, at most
	// the groups' per-connection cap.
	Groups []string `json:"groups,omitempty"`
	// Detached: a resumable connection whose socket was lost, waiting
	// within its resume window for its client (docs/resume.md).
	Detached bool `json:"detached,omitempty"`
}

// Controller performs commands on connections by ID, wherever they live: the
// edge's hub implements it for local connections, the cluster router for any
// connection in the cluster.
type Controller interface {
	// Post sends data as one message: a binary frame if binary, else text.
	Post(ctx context.Context, id string, data []byte, binary bool) error
	// Info reports a live connection; ErrGone if it does not exist.
	Info(ctx context.Context, id string) (Info, error)
	// Close closes the connection with a close code and reason. The code
	// and reason must pass rules.CheckClose.
	Close(ctx context.Context, id string, code int, reason string) error
}

// idBytes random bytes give 96 bits of entropy: unguessable, and unique across
// a cluster without coordination. Encoded: 16 URL-safe characters.
const idBytes = 12

// IDLen is the length of every ID NewID returns.
const IDLen = 16

// NewID returns a new connection ID: crypto-random, URL-safe base64, 16 chars.
func NewID() string {
	var b [idBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("conn: crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ValidID reports whether s has the shape of an ID made by NewID. It is checked
// before an ID touches a Redis key or a NATS subject.
func ValidID(s string) bool {
	if len(s) != IDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !rules.IdentByte(s[i]) {
			return false
		}
	}
	return true
}
