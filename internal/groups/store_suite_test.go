package groups

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// The one conformance suite every Store passes: memory behaves like Redis,
// standalone or Cluster (where every key is its own hash tag).
func TestStoreConformance(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		runStoreSuite(t, func(t *testing.T) Store { return NewMemoryStore() })
	})
	t.Run("redis", func(t *testing.T) {
		client := newRedisClient(t, testenv.StartRedis(t).Addr())
		runStoreSuite(t, func(t *testing.T) Store { return mustRedisStore(t, client) })
	})
	t.Run("redis_cluster", func(t *testing.T) {
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.StartRedisCluster(t, 3).Addrs(),
			DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
		t.Cleanup(func() { client.Close() })
		runStoreSuite(t, func(t *testing.T) Store { return mustRedisStore(t, client) })
	})
}

func mustRedisStore(t *testing.T, c redis.UniversalClient) Store {
	s, err := NewRedisStore(RedisStoreConfig{KeyPrefix: uniquePrefix(t)}, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// walk lists every member through the pager, checking the page bound.
func walk(t *testing.T, s Store, kind Kind, name string, limit int) []string {
	t.Helper()
	ctx := testCtx(t)
	seen := map[string]bool{}
	cursor := ""
	for i := 0; ; i++ {
		page, next, err := s.Members(ctx, kind, name, cursor, limit)
		if err != nil {
			t.Fatalf("Members: %v", err)
		}
		if len(page) > 2*limit+10 {
			t.Fatalf("page of %d for limit %d", len(page), limit)
		}
		for _, id := range page {
			seen[id] = true
		}
		if next == "" {
			break
		}
		if i > 10000 {
			t.Fatal("listing does not end")
		}
		cursor = next
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string { s := slices.Clone(ids); slices.Sort(s); return s }

func runStoreSuite(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("AddListsAndCountsGroupsAndUsers", func(t *testing.T) {
		s, ctx := newStore(t), testCtx(t)
		a, b, c := conn.NewID(), conn.NewID(), conn.NewID()
		must(t, s.Add(ctx, a, "alice", "room", "hall"))
		must(t, s.Add(ctx, b, "alice", "room"))
		must(t, s.Add(ctx, c, "", "hall"))
		must(t, s.Add(ctx, c, "", "hall")) // idempotent
		if got := walk(t, s, KindGroup, "room", 10); !slices.Equal(got, sorted(a, b)) {
			t.Fatalf("room = %v", got)
		}
		if got := walk(t, s, KindGroup, "hall", 10); !slices.Equal(got, sorted(a, c)) {
			t.Fatalf("hall = %v", got)
		}
		if got := walk(t, s, KindUser, "alice", 10); !slices.Equal(got, sorted(a, b)) {
			t.Fatalf("alice = %v", got)
		}
		wantCount(t, s, KindGroup, "hall", 2)
		wantCount(t, s, KindUser, "alice", 2)
		wantCount(t, s, KindUser, "nobody", 0)
		gs, err := s.ConnGroups(ctx, a)
		must(t, err)
		slices.Sort(gs)
		if !slices.Equal(gs, []string{"hall", "room"}) {
			t.Fatalf("groups of a = %v", gs)
		}
	})
	t.Run("RemoveGroupsAndRemoveConn", func(t *testing.T) {
		s, ctx := newStore(t), testCtx(t)
		a, b := conn.NewID(), conn.NewID()
		must(t, s.Add(ctx, a, "bob", "g1", "g2", "g3"))
		must(t, s.Add(ctx, b, "bob", "g1"))
		must(t, s.RemoveGroups(ctx, a, "g2", "never"))
		wantCount(t, s, KindGroup, "g2", 0)
		wantCount(t, s, KindGroup, "g1", 2)
		must(t, s.RemoveConn(ctx, a, "bob"))
		must(t, s.RemoveConn(ctx, a, "bob")) // safe to repeat
		wantCount(t, s, KindGroup, "g1", 1)
		wantCount(t, s, KindGroup, "g3", 0)
		wantCount(t, s, KindUser, "bob", 1)
		if gs, err := s.ConnGroups(ctx, a); err != nil || len(gs) != 0 {
			t.Fatalf("groups of a removed connection = %v, %v", gs, err)
		}
	})
	t.Run("HostileValidNamesStayApart", func(t *testing.T) {
		s, ctx := newStore(t), testCtx(t)
		a, b := conn.NewID(), conn.NewID()
		must(t, s.Add(ctx, a, "u{1}", "{x}", "a:b"))
		must(t, s.Add(ctx, b, "u}1{", "x", "a_b"))
		if got := walk(t, s, KindGroup, "{x}", 10); !slices.Equal(got, []string{a}) {
			t.Fatalf("{x} = %v", got)
		}
		if got := walk(t, s, KindGroup, "x", 10); !slices.Equal(got, []string{b}) {
			t.Fatalf("x = %v", got)
		}
		wantCount(t, s, KindUser, "u{1}", 1)
		must(t, s.RemoveConn(ctx, a, "u{1}"))
		wantCount(t, s, KindGroup, "{x}", 0)
		wantCount(t, s, KindGroup, "a:b", 0)
		wantCount(t, s, KindGroup, "a_b", 1)
	})
	t.Run("PagingReturnsEveryMember", func(t *testing.T) {
		s, ctx := newStore(t), testCtx(t)
		var ids []string
		for range 1000 {
			id := conn.NewID()
			ids = append(ids, id)
			must(t, s.Add(ctx, id, "many", "big"))
		}
		if got := walk(t, s, KindGroup, "big", 37); !slices.Equal(got, sorted(ids...)) {
			t.Fatalf("listed %d of 1000", len(got))
		}
		if got := walk(t, s, KindUser, "many", 1000); len(got) != 1000 {
			t.Fatalf("listed %d of 1000", len(got))
		}
		wantCount(t, s, KindGroup, "big", 1000)
	})
	t.Run("BadCursor", func(t *testing.T) {
		s, ctx := newStore(t), testCtx(t)
		if _, ok := s.(*RedisStore); !ok {
			t.Log("memory cursors are IDs: any string is a position")
			return
		}
		if _, _, err := s.Members(ctx, KindGroup, "g", "not-a-cursor", 10); !errors.Is(err, ErrBadCursor) {
			t.Fatalf("err = %v, want ErrBadCursor", err)
		}
	})
}

func wantCount(t *testing.T, s Store, kind Kind, name string, want int64) {
	t.Helper()
	n, err := s.Count(testCtx(t), kind, name)
	if err != nil || n != want {
		t.Fatalf("Count(%s %q) = %d, %v; want %d", kind, name, n, err, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
