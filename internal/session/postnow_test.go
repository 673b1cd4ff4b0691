package session

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// PostNow (the command server's post as a command arrives) takes a post
// only when nothing would wait: with the fence open it writes the frame
// and answers as Post would; a big post, or any post while the lease is in
// doubt, it leaves untouched for Post.
func TestPostNowTakesOnlyWhatNeedsNoWait(t *testing.T) {
	r := newRig(t, asUser, withLease(2*time.Second))
	c, id := r.openAs(t, "alice")
	local := r.h.Local(r.ws)

	if ok, err := local.PostNow(id, []byte("now"), false); !ok || err != nil {
		t.Fatalf("PostNow with the fence open: %v, %v", ok, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testenv.WaitFor))
	if got, err := wsutil.ReadServerText(c); err != nil || string(got) != "now" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if ok, err := local.PostNow(conn.NewID(), []byte("x"), false); !ok || !errors.Is(err, conn.ErrGone) {
		t.Fatalf("PostNow to no connection: %v, %v; want an answer, gone", ok, err)
	}
	big := bytes.Repeat([]byte("b"), postNowMax+1)
	if ok, err := local.PostNow(id, big, false); ok || err != nil {
		t.Fatalf("PostNow of %d bytes: %v, %v; want it left to Post", len(big), ok, err)
	}

	release := sync.OnceFunc(r.reg.holdRenewals())
	defer release()
	testenv.Eventually(t, "the node fenced, its lease in doubt", func() bool { return !r.node.Healthy() })
	if ok, err := local.PostNow(id, []byte("in doubt"), false); ok || err != nil {
		t.Fatalf("PostNow while the lease is in doubt: %v, %v; want it left to Post", ok, err)
	}
	release()
	testenv.Eventually(t, "the lease renewed", r.node.Healthy)
	// Nothing of the two posts left alone was written: the next frame the
	// client reads is this one.
	if ok, err := local.PostNow(id, []byte("after"), false); !ok || err != nil {
		t.Fatalf("PostNow after the renewal: %v, %v", ok, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testenv.WaitFor))
	if got, err := wsutil.ReadServerText(c); err != nil || string(got) != "after" {
		t.Fatalf("client read %q, %v; want only the post taken after the renewal", got, err)
	}
}
