package swbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/bench/internal/defaults"
)

// The scale scenario (issue #18): a cluster of Edges edge processes, one
// router, a redis-server and a nats-server, every one its own process on
// loopback, holding Conns idle connections; then the operator surfaces
// are timed through the router: the cluster-wide listing paged to the end
// (every ID exactly once, or the run fails), a user's and a group's
// listing, /@nodes, /@stats, GET /@connections/{id}, and an /@events tail
// open during a connect/disconnect churn. See docs/benchmarks.md.

// Names the tagged connections get from connectd (?user=, ?group=).
const (
	scaleUser  = "scale-user"
	scaleGroup = "scale-group"
	scaleToken = "scale-bench-token"
)

// ScaleConfig describes a scale run. The zero value of every field means
// its default.
type ScaleConfig struct {
	// Bins are the binaries (Edge, Router, Swload, Connectd, NATSServer,
	// RedisServer). Required.
	Bins PeerBins
	// Conns are the idle connections, Tagged of them with a user and a
	// group. Defaults 100000 and 2000.
	Conns, Tagged int
	// Edges is the number of edge processes. Default 6.
	Edges int
	// PerProcess is the most connections per swload process. Default 17000.
	PerProcess int
	// Rate is new connections per second, all processes together. Default 2500.
	Rate float64
	// Limit is the page size of the listings. Default 1000 (the API's most).
	Limit int
	// Walks: full cluster-wide listings, each timed. Default 3.
	Walks int
	// MemberWalks: listings of the user's and the group's connections. Default 10.
	MemberWalks int
	// Calls: GET /@nodes and GET /@stats calls each. Default 30.
	Calls int
	// Gets: GET /@connections/{id} calls for random listed IDs. Default 500.
	Gets int
	// Churn connections open and close while an /@events tail reads.
	// Default 5000.
	Churn int
	// Timeout bounds the whole run. Default 10m.
	Timeout time.Duration
	// Log receives progress lines. Default: discarded.
	Log io.Writer
}

func (c ScaleConfig) withDefaults() ScaleConfig {
	defaults.Set(&c.Conns, 100000)
	defaults.Set(&c.Tagged, 2000)
	defaults.Set(&c.Edges, 6)
	defaults.Set(&c.PerProcess, 17000)
	defaults.Set(&c.Rate, 2500)
	defaults.Set(&c.Limit, 1000)
	defaults.Set(&c.Walks, 3)
	defaults.Set(&c.MemberWalks, 10)
	defaults.Set(&c.Calls, 30)
	defaults.Set(&c.Gets, 500)
	defaults.Set(&c.Churn, 5000)
	defaults.Set(&c.Timeout, 10*time.Minute)
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// scaleFDs is the connections one edge may hold under the machine's
// 20,000 open files per process, less its own sockets and files.
const scaleFDs = 19000

// Validate reports whether the config (after defaults) can run.
func (c ScaleConfig) Validate() error {
	d := c.withDefaults()
	if d.Conns < 1 || d.Tagged < 1 || d.Edges < 1 || d.PerProcess < 1 || d.Rate <= 0 || d.Walks < 1 ||
		d.MemberWalks < 1 || d.Calls < 1 || d.Gets < 1 || d.Churn < 1 || d.Timeout <= 0 {
		return fmt.Errorf("%w: counts, the rate and the timeout must be positive", ErrConfig)
	}
	if d.Tagged > d.Conns || d.Tagged > d.PerProcess || d.Churn > d.PerProcess {
		return fmt.Errorf("%w: tagged (%d) and churn (%d) connections must fit one swload process (%d) and tagged the total",
			ErrConfig, d.Tagged, d.Churn, d.PerProcess)
	}
	if d.Limit < 1 || d.Limit > 1000 {
		return fmt.Errorf("%w: page limit %d: the API takes 1..1000", ErrConfig, d.Limit)
	}
	if d.PerProcess > 18000 {
		return fmt.Errorf("%w: %d connections per swload process; at most 18000 under the open-file limit", ErrConfig, d.PerProcess)
	}
	if per := (d.Conns + d.Churn + d.Edges - 1) / d.Edges; per > scaleFDs {
		return fmt.Errorf("%w: %d connections per edge; at most %d under the open-file limit (more -edges)", ErrConfig, per, scaleFDs)
	}
	if procs := d.Conns/d.PerProcess + 3; procs > 250 {
		return fmt.Errorf("%w: %d swload processes needed; at most 250 source addresses", ErrConfig, procs)
	}
	return nil
}

// Timing summarises repeated calls of one kind.
type Timing struct {
	Calls  int           `json:"calls"`
	Errors int           `json:"errors"`
	P50    time.Duration `json:"p50Ns"`
	P99    time.Duration `json:"p99Ns"`
	Max    time.Duration `json:"maxNs"`
}

// timingOf summarises ds (sorted in place) and errs failed calls.
func timingOf(ds []time.Duration, errs int) Timing {
	t := Timing{Calls: len(ds) + errs, Errors: errs, P50: quantile(ds, 0.5), P99: quantile(ds, 0.99)}
	if len(ds) > 0 {
		t.Max = ds[len(ds)-1]
	}
	return t
}

// ScaleWalk is one listing's walk, from the first page to the last.
type ScaleWalk struct {
	Pages    int           `json:"pages"`
	Listed   int           `json:"listed"`
	Distinct int           `json:"distinct"`
	Total    time.Duration `json:"totalNs"`
}

// ScaleListing is the figures of one kind of listing over every walk.
type ScaleListing struct {
	Name  string      `json:"name"`
	Want  int         `json:"want"`
	Walks []ScaleWalk `json:"walks"`
	Page  Timing      `json:"page"`
	// Total is over the walks' total times.
	Total Timing `json:"total"`
	// Problems name the walks that did not list every ID exactly once.
	Problems []string `json:"problems,omitempty"`
}

// ScaleTail is what the /@events tail saw during the churn.
type ScaleTail struct {
	Churn       int   `json:"churn"`
	Lines       int   `json:"lines"`
	Connects    int   `json:"connects"`
	Disconnects int   `json:"disconnects"`
	Dropped     int64 `json:"dropped"`
	// RouterRSSBefore and After: the router's RSS (the tail's process)
	// before the churn and after it; RouterHeapBefore/After its heap in
	// use after a forced GC.
	RouterRSSBefore  int64         `json:"routerRssBeforeBytes"`
	RouterRSSAfter   int64         `json:"routerRssAfterBytes"`
	RouterHeapBefore float64       `json:"routerHeapBeforeBytes"`
	RouterHeapAfter  float64       `json:"routerHeapAfterBytes"`
	Span             time.Duration `json:"spanNs"`
}

// Accounted is the events the tail showed or said it dropped.
func (t ScaleTail) Accounted() int { return t.Connects + t.Disconnects + int(t.Dropped) }

// ScaleReport is what a scale run measured. Pass is false when a listing
// missed or repeated an ID, or connections failed to open.
type ScaleReport struct {
	Conns    int            `json:"connections"`
	Failed   int            `json:"failed"`
	Edges    int            `json:"edges"`
	OpenTime time.Duration  `json:"openTimeNs"`
	Listings []ScaleListing `json:"listings"`
	Nodes    Timing         `json:"nodes"`
	Stats    Timing         `json:"stats"`
	Get      Timing         `json:"get"`
	Tail     ScaleTail      `json:"tail"`
	// Redis is the registry's commands during the listings and calls
	// (INFO commandstats after less before): a keyspace scan (SCAN,
	// KEYS) fails the run.
	Redis      map[string]int64 `json:"redisCommands"`
	RSS        []ScaleRSS       `json:"rss"`
	LoadBefore string           `json:"loadBefore"`
	LoadAfter  string           `json:"loadAfter"`
	Problems   []string         `json:"problems,omitempty"`
	Pass       bool             `json:"pass"`
}

// ScaleRSS is one process's RSS with every connection open.
type ScaleRSS struct {
	Process string `json:"process"`
	Conns   int    `json:"connections"` // its own, from /@nodes; -1 unknown
	RSS     int64  `json:"rssBytes"`
}

// IDTally counts how often each ID was listed in one walk.
type IDTally struct {
	seen   map[string]int
	listed int
}

// NewIDTally returns an empty tally.
func NewIDTally() *IDTally { return &IDTally{seen: map[string]int{}} }

// Add counts one page.
func (t *IDTally) Add(ids []string) {
	for _, id := range ids {
		t.seen[id]++
	}
	t.listed += len(ids)
}

// Distinct is the number of different IDs listed.
func (t *IDTally) Distinct() int { return len(t.seen) }

// ExactlyOnce reports nil when want different IDs were listed, each once;
// otherwise how many were repeated (with an example) and how many are
// missing or extra.
func (t *IDTally) ExactlyOnce(want int) error {
	var errs []error
	dups, example := 0, ""
	for id, n := range t.seen {
		if n > 1 {
			dups++
			if example == "" || id < example {
				example = id
			}
		}
	}
	if dups > 0 {
		errs = append(errs, fmt.Errorf("%d IDs listed more than once (e.g. %s ×%d)", dups, example, t.seen[example]))
	}
	if got := len(t.seen); got != want {
		errs = append(errs, fmt.Errorf("%d different IDs listed, want %d", got, want))
	}
	return errors.Join(errs...)
}

// scaleAPI is the router's API with the bench's bearer token.
type scaleAPI struct {
	base, token string
}

// get decodes a 200 answer to path into v and times the call.
func (a scaleAPI) get(ctx context.Context, path string, v any) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	begin := time.Now()
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	if v == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	} else {
		err = json.NewDecoder(resp.Body).Decode(v)
	}
	return time.Since(begin), err
}

// listPage is one page of a listing: the cluster-wide one has objects,
// the user's and group's have IDs.
type listPage struct {
	Count       int64             `json:"count"`
	Connections []json.RawMessage `json:"connections"`
	Cursor      string            `json:"cursor"`
}

// PageIDs returns the connection IDs of a page's entries: plain strings,
// or objects with "connectionId".
func PageIDs(entries []json.RawMessage) ([]string, error) {
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		var id string
		if json.Unmarshal(e, &id) != nil {
			var o struct {
				ID string `json:"connectionId"`
			}
			if err := json.Unmarshal(e, &o); err != nil || o.ID == "" {
				return nil, fmt.Errorf("swbench: listing entry %s: no connection ID", e)
			}
			id = o.ID
		}
		out = append(out, id)
	}
	return out, nil
}

// walk pages through path (which has a "?") to the end, at most maxPages,
// timing each page into pages; it returns the walk and its tally.
func (a scaleAPI) walk(ctx context.Context, path string, maxPages int, pages *[]time.Duration) (ScaleWalk, *IDTally, error) {
	var w ScaleWalk
	tally := NewIDTally()
	begin := time.Now()
	cursor := ""
	for {
		if w.Pages == maxPages {
			return w, tally, fmt.Errorf("swbench: %s: no last page after %d pages", path, maxPages)
		}
		u := path
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		var p listPage
		d, err := a.get(ctx, u, &p)
		if err != nil {
			return w, tally, err
		}
		*pages = append(*pages, d)
		ids, err := PageIDs(p.Connections)
		if err != nil {
			return w, tally, err
		}
		tally.Add(ids)
		w.Pages++
		if cursor = p.Cursor; cursor == "" {
			break
		}
	}
	w.Total = time.Since(begin)
	w.Listed, w.Distinct = tally.listed, tally.Distinct()
	return w, tally, nil
}

// listing walks path walks times and checks each walk lists want IDs
// exactly once; it returns the last walk's IDs.
func (a scaleAPI) listing(ctx context.Context, name, path string, want, walks, limit int, log io.Writer) (ScaleListing, []string, error) {
	l := ScaleListing{Name: name, Want: want}
	var pages, totals []time.Duration
	var ids []string
	maxPages := 4*(want/limit+1) + 10
	for i := range walks {
		w, tally, err := a.walk(ctx, path, maxPages, &pages)
		if err != nil {
			return l, nil, err
		}
		l.Walks = append(l.Walks, w)
		totals = append(totals, w.Total)
		if err := tally.ExactlyOnce(want); err != nil {
			l.Problems = append(l.Problems, fmt.Sprintf("walk %d: %v", i+1, err))
		}
		fmt.Fprintf(log, "%s: walk %d: %d pages, %d listed, %d distinct, %v\n", name, i+1, w.Pages, w.Listed, w.Distinct, w.Total.Round(time.Millisecond))
		if i == walks-1 {
			ids = make([]string, 0, len(tally.seen))
			for id := range tally.seen {
				ids = append(ids, id)
			}
		}
	}
	l.Page, l.Total = timingOf(pages, 0), timingOf(totals, 0)
	return l, ids, nil
}

// repeat times n calls of path.
func (a scaleAPI) repeat(ctx context.Context, n int, path func(i int) string) Timing {
	var ds []time.Duration
	errs := 0
	for i := range n {
		d, err := a.get(ctx, path(i), nil)
		if err != nil {
			errs++
			continue
		}
		ds = append(ds, d)
	}
	return timingOf(ds, errs)
}

// TailEvent is one /@events line's fields the scenario counts.
type TailEvent struct {
	Type    string `json:"type"`
	Dropped int64  `json:"dropped"`
}

// ParseTailLine returns the event of an SSE "data:" line; ok is false for
// every other line (blank separators, comments).
func ParseTailLine(line string) (ev TailEvent, ok bool, err error) {
	data, found := strings.CutPrefix(line, "data:")
	if !found {
		return ev, false, nil
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(data)), &ev); err != nil {
		return ev, false, fmt.Errorf("swbench: events line %q: %w", line, err)
	}
	return ev, true, nil
}

// tailReader counts the events of an open /@events stream.
type tailReader struct {
	mu   sync.Mutex
	tail ScaleTail
	err  error
	open chan struct{} // closed at the "open" event
	done chan struct{}
}

func (a scaleAPI) openTail(ctx context.Context) (*tailReader, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/@events?rate=100", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	// No client timeout: the stream lives until ctx ends.
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("swbench: events: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("swbench: events: %s", resp.Status)
	}
	t := &tailReader{open: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		opened := false
		for sc.Scan() {
			ev, ok, err := ParseTailLine(sc.Text())
			t.mu.Lock()
			switch {
			case err != nil:
				t.err = err
			case ok:
				t.tail.Lines++
				t.tail.Dropped += ev.Dropped
				switch ev.Type {
				case "connect":
					t.tail.Connects++
				case "disconnect":
					t.tail.Disconnects++
				}
			}
			t.mu.Unlock()
			if ok && ev.Type == "open" && !opened {
				opened = true
				close(t.open)
			}
		}
	}()
	select {
	case <-t.open:
		return t, nil
	case <-t.done:
		return nil, errors.New("swbench: events: stream ended before its open event")
	case <-time.After(10 * time.Second):
		return nil, errors.New("swbench: events: no open event within 10s")
	}
}

func (t *tailReader) snapshot() (ScaleTail, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tail, t.err
}

// RunScale runs the scale scenario. The error reports a run that could not
// be made; a run that was made and failed a check returns a report with
// Pass false.
func RunScale(ctx context.Context, c ScaleConfig) (rep ScaleReport, err error) {
	if err := c.Validate(); err != nil {
		return rep, err
	}
	c = c.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "swbench-scale-")
	if err != nil {
		return rep, fmt.Errorf("swbench: %w", err)
	}
	defer os.RemoveAll(dir)
	rep.LoadBefore = loadAvg()
	rep.Edges = c.Edges

	d, router, err := startScaleCluster(ctx, c, dir)
	if d != nil {
		defer func() {
			if serr := d.stop(); serr != nil && err == nil {
				err = serr
			}
		}()
	}
	if err != nil {
		return rep, err
	}
	targets := make([]string, len(d.nodes))
	for i, n := range d.nodes {
		targets[i] = n.ws
	}
	target := strings.Join(targets, ",")
	api := scaleAPI{base: "http://" + router.api, token: scaleToken}

	// The idle connections: plain ones from 127.0.0.2, .3, …, the tagged
	// ones (one user, one group) from the address after them.
	plain := c.Conns - c.Tagged
	lc := Config{Swload: Command{Argv: []string{c.Bins.Swload}}, Conns: plain, PerProcess: c.PerProcess}
	procs := (plain + c.PerProcess - 1) / c.PerProcess
	perRate := strconv.FormatFloat(c.Rate/float64(procs+1), 'f', 1, 64)
	idle := []string{"-mode", "idle", "-rate", perRate, "-hold", "1h", "-max-duration", "1h"}
	begin := time.Now()
	fmt.Fprintf(c.Log, "scale: opening %d connections (%d with user %s, group %s) over %d edges at %.0f/s\n",
		c.Conns, c.Tagged, scaleUser, scaleGroup, c.Edges, c.Rate)
	var ps []*proc
	defer func() { stopAll(ps) }()
	if plain > 0 {
		if ps, err = loaders(lc, target, func(int) []string { return idle }); err != nil {
			return rep, err
		}
	}
	tagged, err := startSwload("swload[tagged]", c.Bins.Swload, target, procs, c.Tagged,
		append([]string{"-path", "/?user=" + scaleUser + "&group=" + scaleGroup}, idle...))
	if err != nil {
		return rep, err
	}
	ps = append(ps, tagged)
	open, err := awaitReady(ctx, ps)
	if err != nil {
		return rep, err
	}
	rep.OpenTime = time.Since(begin)
	rep.Conns = open
	rep.Failed = c.Conns - open
	fmt.Fprintf(c.Log, "scale: %d open (%d failed) in %v\n", open, rep.Failed, rep.OpenTime.Round(time.Second))
	if rep.Failed > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d connections failed to open", rep.Failed))
	}
	// The registry writes trail the handshakes: wait for the count.
	if err := awaitCount(ctx, api, open); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}

	rdb := redis.NewClient(&redis.Options{Addr: router.redis})
	defer rdb.Close()
	before, err := RedisCommandCalls(ctx, rdb)
	if err != nil {
		return rep, err
	}
	all, ids, err := api.listing(ctx, "cluster", "/@connections?limit="+strconv.Itoa(c.Limit), open, c.Walks, c.Limit, c.Log)
	if err != nil {
		return rep, err
	}
	rep.Listings = append(rep.Listings, all)
	for _, m := range []struct{ name, path string }{
		{"user " + scaleUser, "/@users/" + scaleUser + "/connections"},
		{"group " + scaleGroup, "/@groups/" + scaleGroup + "/connections"},
	} {
		l, _, err := api.listing(ctx, m.name, m.path+"?limit="+strconv.Itoa(c.Limit), c.Tagged, c.MemberWalks, c.Limit, c.Log)
		if err != nil {
			return rep, err
		}
		rep.Listings = append(rep.Listings, l)
	}
	for _, l := range rep.Listings {
		for _, p := range l.Problems {
			rep.Problems = append(rep.Problems, l.Name+": "+p)
		}
	}
	rep.Nodes = api.repeat(ctx, c.Calls, func(int) string { return "/@nodes" })
	rep.Stats = api.repeat(ctx, c.Calls, func(int) string { return "/@stats" })
	if len(ids) > 0 {
		rng := rand.New(rand.NewPCG(1, 2))
		rep.Get = api.repeat(ctx, c.Gets, func(int) string { return "/@connections/" + url.PathEscape(ids[rng.IntN(len(ids))]) })
	}
	fmt.Fprintf(c.Log, "scale: nodes p50 %v, stats p50 %v, get p50 %v\n", rep.Nodes.P50, rep.Stats.P50, rep.Get.P50)
	after, err := RedisCommandCalls(ctx, rdb)
	if err != nil {
		return rep, err
	}
	rep.Redis = map[string]int64{}
	for cmd, n := range after {
		if n -= before[cmd]; n > 0 {
			rep.Redis[cmd] = n
		}
	}
	for _, cmd := range []string{"scan", "keys"} {
		if n := rep.Redis[cmd]; n > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("the registry ran %d %s commands: a keyspace scan", n, strings.ToUpper(cmd)))
		}
	}
	if rep.RSS, err = scaleRSS(ctx, api, d); err != nil {
		return rep, err
	}

	if rep.Tail, err = scaleChurn(ctx, c, api, d, router, target, procs+1); err != nil {
		return rep, err
	}
	switch t := rep.Tail; {
	case t.Connects+t.Disconnects == 0:
		rep.Problems = append(rep.Problems, "the events tail saw none of the churn")
	case t.Accounted() != 2*c.Churn:
		rep.Problems = append(rep.Problems, fmt.Sprintf("the events tail shows or drops %d events of the churn's %d connects and disconnects", t.Accounted(), 2*c.Churn))
	}
	for _, t := range []struct {
		name string
		t    Timing
	}{{"nodes", rep.Nodes}, {"stats", rep.Stats}, {"get", rep.Get}} {
		if t.t.Errors > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d of %d calls failed", t.name, t.t.Errors, t.t.Calls))
		}
	}
	rep.LoadAfter = loadAvg()
	rep.Pass = len(rep.Problems) == 0
	return rep, nil
}

// startSwload starts one swload process from source address 127.0.0.<2+slot>.
func startSwload(name, bin, target string, slot, n int, flags []string) (*proc, error) {
	argv := append([]string{bin, "-json", "-target", target, "-src", "127.0.0." + strconv.Itoa(2+slot), "-n", strconv.Itoa(n)}, flags...)
	return start(name, Command{Argv: argv}, nil)
}

// awaitCount polls the cluster count until it is want (30 s at most).
func awaitCount(ctx context.Context, api scaleAPI, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	var got int64
	for {
		var p listPage
		if _, err := api.get(ctx, "/@connections?limit=1", &p); err != nil {
			return err
		}
		if got = p.Count; got == int64(want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster counts %d connections, the clients opened %d", got, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// scaleNode is the router's addresses, and the registry's.
type scaleNode struct {
	p          *proc
	api, admin string
	redis      string
}

// startScaleCluster starts redis-server, nats-server, connectd (which
// gives ?user= and ?group= to the connection), the edges and the router,
// every API behind the bench's bearer token.
func startScaleCluster(ctx context.Context, c ScaleConfig, dir string) (*deployment, scaleNode, error) {
	d := &deployment{system: "scale"}
	var router scaleNode
	rp, raddr, err := startRedisProc(ctx, c.Bins.RedisServer, dir)
	if err != nil {
		return d, router, err
	}
	d.procs = append(d.procs, rp)
	naddr, err := freeAddr()
	if err != nil {
		return d, router, err
	}
	np, err := startNATSProc(ctx, c.Bins.NATSServer, naddr)
	if err != nil {
		return d, router, err
	}
	np.anyExit = true
	d.procs = append(d.procs, np)
	wire := []string{"-nats-url", "nats://" + naddr, "-redis-url", "redis://" + raddr + "/0",
		"-api-tokens", scaleToken, "-pprof", "-log-level", "warn"}
	if _, _, err := d.launch(ctx, "connectd", []string{c.Bins.Connectd, "-nats", "nats://" + naddr}, ""); err != nil {
		return d, router, err
	}
	for i := range c.Edges {
		argv := append([]string{c.Bins.Edge, "-listen", "{listen}", "-admin-listen", "{admin}", "-api-listen", "{api}",
			"-connect-mode", "required"}, wire...)
		p, repl, err := d.launch(ctx, "edge"+strconv.Itoa(i+1), argv, "/readyz")
		if err != nil {
			return d, router, err
		}
		d.nodes = append(d.nodes, peerNode{p: p, ws: repl["{listen}"], admin: repl["{admin}"]})
	}
	p, repl, err := d.launch(ctx, "router", append([]string{c.Bins.Router, "-api-listen", "{api}", "-admin-listen", "{admin}"}, wire...), "/readyz")
	if err != nil {
		return d, router, err
	}
	router = scaleNode{p: p, api: repl["{api}"], admin: repl["{admin}"], redis: raddr}
	fmt.Fprintf(c.Log, "scale: redis %s, nats %s, %d edges, router API %s\n", raddr, naddr, c.Edges, router.api)
	return d, router, nil
}

// scaleRSS reads every cluster process's RSS, with each edge's own count
// from /@nodes.
func scaleRSS(ctx context.Context, api scaleAPI, d *deployment) ([]ScaleRSS, error) {
	var nodes struct {
		Nodes []struct {
			Role        string `json:"role"`
			Connections int    `json:"connections"`
		} `json:"nodes"`
	}
	_, _ = api.get(ctx, "/@nodes", &nodes)
	var counts []int
	for _, n := range nodes.Nodes {
		if n.Role == "edge" {
			counts = append(counts, n.Connections)
		}
	}
	var out []ScaleRSS
	edge := 0
	for _, p := range d.procs {
		rss, err := ReadRSS(p.pid())
		if err != nil {
			return nil, err
		}
		r := ScaleRSS{Process: p.name, Conns: -1, RSS: rss}
		if strings.HasPrefix(p.name, "edge") {
			// /@nodes does not say which process a node ID is; the
			// counts are shown sorted next to the edges in start order.
			if edge < len(counts) {
				r.Conns = counts[edge]
			}
			edge++
		}
		out = append(out, r)
	}
	return out, nil
}

// scaleChurn opens an /@events tail on the router, then c.Churn
// connections that open and close again, and reads the tail until the
// churn is over.
func scaleChurn(ctx context.Context, c ScaleConfig, api scaleAPI, d *deployment, router scaleNode, target string, slot int) (ScaleTail, error) {
	gc := func() float64 {
		_ = forceGC(ctx, "http://"+router.admin+"/debug/pprof/heap?gc=1")
		m, err := Scrape(ctx, "http://"+router.admin+"/metrics")
		if err != nil {
			return -1
		}
		return m["go_memstats_heap_inuse_bytes"]
	}
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	tr, err := api.openTail(tctx)
	if err != nil {
		return ScaleTail{}, err
	}
	heapBefore := gc()
	rssBefore, err := ReadRSS(router.p.pid())
	if err != nil {
		return ScaleTail{}, err
	}
	begin := time.Now()
	fmt.Fprintf(c.Log, "scale: churn of %d connections with an /@events tail open\n", c.Churn)
	p, err := startSwload("swload[churn]", c.Bins.Swload, target, slot, c.Churn,
		[]string{"-mode", "idle", "-rate", "-1", "-concurrency", "256", "-hold", "2s", "-max-duration", "2m"})
	if err != nil {
		return ScaleTail{}, err
	}
	if _, err := loadersDone(ctx, []*proc{p}); err != nil {
		return ScaleTail{}, err
	}
	// Every connect and disconnect is either a line or counted in a later
	// line's dropped; the tail's tick (at least every 15 s) reports the
	// last of them. Wait for the account to close, 20 s at most.
	t, tailErr := tr.snapshot()
	for deadline := time.Now().Add(20 * time.Second); t.Accounted() < 2*c.Churn && time.Now().Before(deadline) && tailErr == nil; {
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		t, tailErr = tr.snapshot()
	}
	t.Churn, t.Span = c.Churn, time.Since(begin)
	t.RouterHeapBefore, t.RouterRSSBefore = heapBefore, rssBefore
	t.RouterHeapAfter = gc()
	if t.RouterRSSAfter, err = ReadRSS(router.p.pid()); err != nil {
		return t, err
	}
	stop()
	<-tr.done
	return t, tailErr
}

// RedisCommandCalls reads how many times each command has run on the
// server (INFO commandstats), by lower-case name.
func RedisCommandCalls(ctx context.Context, rdb *redis.Client) (map[string]int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("swbench: redis commandstats: %w", err)
	}
	return ParseCommandStats(info), nil
}

// ParseCommandStats reads INFO commandstats lines
// ("cmdstat_sscan:calls=12,usec=…"); a subcommand ("cmdstat_client|setname")
// keeps its full name.
func ParseCommandStats(info string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if name, ok = strings.CutPrefix(name, "cmdstat_"); !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, found := strings.CutPrefix(f, "calls="); found {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					out[strings.ToLower(name)] = n
				}
			}
		}
	}
	return out
}

// loadAvg is /proc/loadavg's first three fields, the machine's load.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
