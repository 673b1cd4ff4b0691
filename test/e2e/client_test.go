package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// codeAbnormal is what a client reports when the TCP connection ended
// without a close frame (RFC 6455 §7.1.5).
const codeAbnormal = 1006

var clientSeq atomic.Int64

// wsClient is one WebSocket client in the test process: it reads every
// message into a log and remembers how the connection ended.
type wsClient struct {
	key  string // unique, sent as query parameter c so the backend can name it
	edge int    // index of the edge it dialled
	id   string // connection ID, from the backend's CONNECT event

	conn net.Conn
	wmu  sync.Mutex // the read loop answers pings and closes: one writer at a time
	// numbered counts the messages m0, m1, … that sendEvery20ms has sent.
	numbered atomic.Int64

	mu          sync.Mutex
	msgs        []received
	closeCode   int
	closeReason string
	done        chan struct{} // the read loop ended
	hold        chan struct{} // if set, the read loop waits for it to close before reading
}

type received struct {
	data string
	at   time.Time
}

type lockedWriter struct{ c *wsClient }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.c.conn.Write(p)
}

// dial opens a WebSocket to url as a new client. The connection is closed
// and its reader waited for when the test ends.
func dial(t testing.TB, url string, edge int) (*wsClient, error) {
	return dialHeld(t, url, edge, nil)
}

// dialHeld is dial for a client that reads nothing until hold is closed: a
// slow reader.
func dialHeld(t testing.TB, url string, edge int, hold chan struct{}) (*wsClient, error) {
	return dialWith(t, ws.Dialer{Timeout: 20 * time.Second}, url, edge, hold)
}

// dialWith is dialHeld through d (e.g. from a given source address).
func dialWith(t testing.TB, d ws.Dialer, url string, edge int, hold chan struct{}) (*wsClient, error) {
	c := &wsClient{key: fmt.Sprintf("k%d", clientSeq.Add(1)), edge: edge, done: make(chan struct{}), hold: hold}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	target := url + "/?c=" + c.key
	if strings.Contains(url, "?") { // a query of its own (e.g. ?user= for the recorder's $connect reply)
		target = url + "&c=" + c.key
	}
	conn, br, _, err := d.Dial(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	c.conn = conn
	if br == nil {
		br = bufio.NewReader(conn)
	}
	go c.readLoop(br) // owned by c: ends when conn closes; Cleanup waits for it
	t.Cleanup(func() {
		_ = conn.Close()
		if hold != nil {
			select {
			case <-hold:
			default:
				close(hold)
			}
		}
		<-c.done
	})
	return c, nil
}

func (c *wsClient) readLoop(br *bufio.Reader) {
	defer close(c.done)
	defer c.conn.Close()
	if c.hold != nil {
		<-c.hold
	}
	rd := &wsutil.Reader{Source: br, State: ws.StateClientSide}
	ctl := wsutil.ControlHandler{Src: rd, Dst: lockedWriter{c}, State: ws.StateClientSide}
	rd.OnIntermediate = wsutil.ControlFrameHandler(lockedWriter{c}, ws.StateClientSide)
	end := func(code int, reason string) {
		c.mu.Lock()
		c.closeCode, c.closeReason = code, reason
		c.mu.Unlock()
	}
	for {
		hdr, err := rd.NextFrame()
		if err != nil {
			end(codeAbnormal, err.Error())
			return
		}
		switch {
		case hdr.OpCode == ws.OpClose:
			// Record the server's code before answering: the server may
			// already have closed the socket, and the answer then fails.
			payload, err := io.ReadAll(rd)
			if err != nil {
				end(codeAbnormal, err.Error())
				return
			}
			code, reason := ws.ParseCloseFrameData(payload)
			end(int(code), reason)
			_ = wsutil.WriteClientMessage(lockedWriter{c}, ws.OpClose, ws.NewCloseFrameBody(code, ""))
			return
		case hdr.OpCode.IsControl():
			if err := ctl.Handle(hdr); err != nil {
				end(codeAbnormal, err.Error())
				return
			}
		default:
			data, err := io.ReadAll(rd)
			if err != nil {
				end(codeAbnormal, err.Error())
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, received{data: string(data), at: time.Now()})
			c.mu.Unlock()
		}
	}
}

// send writes a text message to the server.
func (c *wsClient) send(data []byte) error {
	return wsutil.WriteClientText(lockedWriter{c}, data)
}

// closeWith starts the closing handshake with code and waits for the server
// to answer it.
func (c *wsClient) closeWith(code int, timeout time.Duration) error {
	body := ws.NewCloseFrameBody(ws.StatusCode(code), "bye")
	if err := wsutil.WriteClientMessage(lockedWriter{c}, ws.OpClose, body); err != nil {
		return err
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("client %s: no close answer within %s", c.key, timeout)
	}
}

func (c *wsClient) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// closed returns the close code and reason once the connection has ended.
func (c *wsClient) closed() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.closeReason
}

// messages returns a copy of what the client received so far.
func (c *wsClient) messages() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.msgs...)
}

func (c *wsClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// dialMany opens n clients, spread round-robin over the edges listed, a few
// at a time, and waits until the backend has named every one of them.
func dialMany(t testing.TB, cl *cluster, edges []int, n int) []*wsClient {
	t.Helper()
	clients := make([]*wsClient, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		e := edges[i%len(edges)]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			clients[i], errs[i] = dial(t, cl.edges[e].wsURL(), e)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("dial %d clients: %v", n, err)
	}
	cl.learnIDs(clients)
	return clients
}

// ids lists the clients' connection IDs.
func ids(clients []*wsClient) []string {
	out := make([]string, len(clients))
	for i, c := range clients {
		out[i] = c.id
	}
	return out
}
