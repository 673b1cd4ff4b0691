package swload

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Centrifugo's client protocol (v2, JSON encoding), as little of it as a
// load client needs: after the WebSocket upgrade the client sends a connect
// command, then optionally a subscribe command, each a JSON object with an
// "id" that the server's reply carries back. The server may put several
// replies and pushes in one frame, one JSON object per line. A ping is an
// empty object, answered with an empty object.

// Protocol is what the client speaks over the WebSocket.
type Protocol string

const (
	// ProtocolRaw sends and receives plain messages (Switchboard, the
	// baseline): the connection counts as open at the 101.
	ProtocolRaw Protocol = "raw"
	// ProtocolCentrifugo speaks Centrifugo's JSON protocol: the connection
	// counts as open once the connect reply (and, with Config.Channel, the
	// subscribe reply) has arrived.
	ProtocolCentrifugo Protocol = "centrifugo"
)

// Command ids of the two commands a client sends.
const (
	cfConnectID   = 1
	cfSubscribeID = 2
)

// appendCFConnect appends a connect command; token may be empty (insecure
// mode, or a connect proxy that authenticates the connection itself).
func appendCFConnect(dst []byte, token string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, cfConnectID, 10)
	dst = append(dst, `,"connect":{`...)
	if token != "" {
		dst = append(dst, `"token":`...)
		dst = appendJSONString(dst, token)
	}
	return append(dst, "}}"...)
}

// appendCFSubscribe appends a subscribe command to channel.
func appendCFSubscribe(dst []byte, channel string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, cfSubscribeID, 10)
	dst = append(dst, `,"subscribe":{"channel":`...)
	dst = appendJSONString(dst, channel)
	return append(dst, "}}"...)
}

func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// cfPong is the answer to the server's ping.
var cfPong = []byte("{}")

// cfKind is what one line from the server is.
type cfKind uint8

const (
	cfOther      cfKind = iota // a push the client ignores (join, leave, …)
	cfPing                     // {}: answer with {}
	cfReply                    // a reply to command cfLine.id
	cfError                    // an error reply to command cfLine.id
	cfPub                      // a publication in a subscribed channel
	cfDisconnect               // the server says it disconnects the client
	cfBad                      // not a JSON object
)

type cfLine struct {
	kind cfKind
	id   int
}

var (
	cfIDPrefix   = []byte(`{"id":`)
	cfPushPrefix = []byte(`{"push":`)
	cfErrorKey   = []byte(`"error":`)
	cfPubKey     = []byte(`"pub":`)
	cfDiscKey    = []byte(`"disconnect":`)
)

// classifyCF says what one line of a server frame is. Centrifugo writes
// "id" first in replies and "push" first in pushes, which the fast path
// relies on (a publication is classified without decoding it); anything
// else is decoded in full.
func classifyCF(line []byte) cfLine {
	line = bytes.TrimSpace(line)
	if len(line) == 2 && line[0] == '{' && line[1] == '}' {
		return cfLine{kind: cfPing}
	}
	if rest, ok := bytes.CutPrefix(line, cfIDPrefix); ok {
		id, n := 0, 0
		for n < len(rest) && n < 10 && rest[n] >= '0' && rest[n] <= '9' {
			id = id*10 + int(rest[n]-'0')
			n++
		}
		if n > 0 && n < len(rest) && (rest[n] == ',' || rest[n] == '}') {
			if bytes.HasPrefix(rest[n:], []byte(`,"error":`)) {
				return cfLine{kind: cfError, id: id}
			}
			return cfLine{kind: cfReply, id: id}
		}
	}
	if rest, ok := bytes.CutPrefix(line, cfPushPrefix); ok {
		// The push's own kind is the first key after its "channel" (and
		// optional numeric "id"); a publication's data comes after "pub",
		// so a "disconnect" inside the data cannot be mistaken for one.
		pub, disc := bytes.Index(rest, cfPubKey), bytes.Index(rest, cfDiscKey)
		switch {
		case pub >= 0 && (disc < 0 || pub < disc):
			return cfLine{kind: cfPub}
		case disc >= 0:
			return cfLine{kind: cfDisconnect}
		}
		return cfLine{kind: cfOther}
	}
	return classifyCFSlow(line)
}

// classifyCFSlow decodes a line whose keys are not in Centrifugo's usual
// order.
func classifyCFSlow(line []byte) cfLine {
	var m struct {
		ID    int             `json:"id"`
		Error json.RawMessage `json:"error"`
		Push  *struct {
			Pub        json.RawMessage `json:"pub"`
			Disconnect json.RawMessage `json:"disconnect"`
		} `json:"push"`
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return cfLine{kind: cfBad}
	}
	switch {
	case m.Push != nil && m.Push.Pub != nil:
		return cfLine{kind: cfPub}
	case m.Push != nil && m.Push.Disconnect != nil:
		return cfLine{kind: cfDisconnect}
	case m.Push != nil:
		return cfLine{kind: cfOther}
	case m.ID > 0 && m.Error != nil:
		return cfLine{kind: cfError, id: m.ID}
	case m.ID > 0:
		return cfLine{kind: cfReply, id: m.ID}
	}
	return cfLine{kind: cfOther}
}

// channelFor expands the channel template for connection index i: every
// "{i}" becomes i, so each connection can have a channel of its own.
func channelFor(template string, i int) string {
	return strings.ReplaceAll(template, "{i}", strconv.Itoa(i))
}
