package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/switchboardgw/switchboard/pkg/connections"
)

// statusOf is the HTTP status of an API call's outcome.
func statusOf(err error) int {
	var e *connections.Error
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &e):
		return e.StatusCode
	}
	return -1
}

// answers makes a POST to connection id and a membership change for it at
// the same moment, through the router, and returns their statuses.
func answers(router *connections.Client, id, group string) (post, put int) {
	ctx := context.Background()
	done := make(chan int, 1)
	go func() { done <- statusOf(router.AddToGroup(ctx, group, id)) }()
	post = statusOf(router.PostText(ctx, id, []byte("x")))
	return post, <-done
}

// One dead-owner rule for every node command (docs/cluster.md, "The
// dead-owner rule"): whatever happened to the edge that owns a connection,
// a POST to the connection and a membership change for it get the same
// answer. Killed: 503 while its lease lives (it may be restarting), 410 once
// the lease has expired. Paused past its lease: 410.
func TestDeadOwnerSameAnswerForEveryCommand(t *testing.T) {
	cl := startCluster(t, clusterConfig{})
	router := cl.api(cl.routers[0].apiURL())
	onKilled := dialMany(t, cl, []int{0}, 1)[0]
	onPaused := dialMany(t, cl, []int{1}, 1)[0]
	for _, c := range []*wsClient{onKilled, onPaused} {
		if post, put := answers(router, c.id, "before"); post != http.StatusOK || put != http.StatusOK {
			t.Fatalf("owner alive: POST %d, PUT %d; want 200 and 200", post, put)
		}
	}

	t.Run("owner killed, lease held: 503 for both", func(t *testing.T) {
		cl.edges[0].p.kill()
		post, put := answers(router, onKilled.id, "while-held")
		if post != put {
			t.Fatalf("POST %d, PUT %d: the two commands disagree about the same owner", post, put)
		}
		// Killed a moment ago, the lease (renewed every TTL/3) still lives,
		// unless the NATS server kept the dead subscription past it.
		if post != http.StatusServiceUnavailable && post != http.StatusGone {
			t.Fatalf("POST and PUT %d, want 503 (or 410 had the lease run out first)", post)
		}
	})
	t.Run("owner killed, lease expired: 410 for both", func(t *testing.T) {
		eventually(t, waitTimeout, "410 for both commands", func() error {
			post, put := answers(router, onKilled.id, "after-expiry")
			if post != http.StatusGone || put != http.StatusGone {
				return fmt.Errorf("POST %d, PUT %d", post, put)
			}
			return nil
		})
	})
	t.Run("owner paused past its lease: 410 for both", func(t *testing.T) {
		paused := cl.edges[1].p
		paused.pause()
		defer paused.resume()
		// No answer comes; by the time the calls stop waiting for one (5 s)
		// the lease (3 s) has run out.
		eventually(t, waitTimeout, "410 for both commands", func() error {
			post, put := answers(router, onPaused.id, "paused")
			if post != http.StatusGone || put != http.StatusGone {
				return fmt.Errorf("POST %d, PUT %d", post, put)
			}
			return nil
		})
	})
}
