package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboardgw/switchboard/internal/freeport"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

// childMainEnv carries, JSON-encoded, the arguments of an edge process the
// test binary runs as a child (TestHelperEdgeMain): Main exactly as
// cmd/edge calls it, with its real stderr and exit code.
const childMainEnv = "SWITCHBOARD_TEST_EDGE_MAIN_ARGS"

// TestHelperEdgeMain is not a test: it is the body of the child process
// started by runEdgeProcess, and does nothing in a normal run.
func TestHelperEdgeMain(t *testing.T) {
	raw := os.Getenv(childMainEnv)
	if raw == "" {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		fmt.Fprintln(os.Stderr, "bad child args:", err)
		os.Exit(3)
	}
	var cfg EdgeConfig
	os.Exit(Main("edge", args, cfg.RegisterFlags, &cfg.Process, func(log *slog.Logger) (Runner, error) {
		return NewEdge(cfg, log)
	}))
}

// edgeProcess is a child edge process and the lines of its stderr.
type edgeProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when stderr is drained and the process has exited
	err  error         // Wait's result, after done

	mu    sync.Mutex
	lines []string
}

func startEdgeProcess(t *testing.T, args ...string) *edgeProcess {
	t.Helper()
	raw, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperEdgeMain$", "-test.count=1")
	cmd.Env = append(os.Environ(), childMainEnv+"="+string(raw))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &edgeProcess{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *edgeProcess) stderr() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

func (p *edgeProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits (bounded) for the process to exit and returns its exit code.
func (p *edgeProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("edge process did not exit; stderr:\n%s", strings.Join(p.stderr(), "\n"))
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("edge process: %v", p.err)
	}
	return 0
}

func childBaseArgs() []string {
	return []string{"-listen", "127.0.0.1:0", "-api-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0",
		"-nats-embedded-listen", "127.0.0.1:0", "-drain-window", "50ms", "-lease-ttl", "3s"}
}

const proxyProtocolNeedsTrusted = "-proxy-protocol optional|required needs -trusted-proxies"

// A PROXY header believed from anyone lets every client set its source IP:
// -proxy-protocol without -trusted-proxies is a configuration error.
func TestProxyProtocolNeedsTrustedProxies(t *testing.T) {
	for _, mode := range []string{"optional", "required"} {
		c := testEdgeConfig(t, "-proxy-protocol", mode)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), proxyProtocolNeedsTrusted) {
			t.Fatalf("-proxy-protocol %s alone: Validate = %v, want %q", mode, err, proxyProtocolNeedsTrusted)
		}
		c = testEdgeConfig(t, "-proxy-protocol", mode, "-trusted-proxies", "10.0.0.0/8,127.0.0.2")
		if err := c.Validate(); err != nil {
			t.Fatalf("-proxy-protocol %s with -trusted-proxies: %v", mode, err)
		}
	}
	if c := testEdgeConfig(t); c.Validate() != nil {
		t.Fatal("the default (-proxy-protocol off) must not need -trusted-proxies")
	}
}

// The real process: cmd/edge's Main with -proxy-protocol optional and no
// trusted proxies exits 1 before serving, naming the flags.
func TestEdgeProcessRefusesProxyProtocolWithoutTrustedProxies(t *testing.T) {
	p := startEdgeProcess(t, append(childBaseArgs(), "-proxy-protocol", "optional")...)
	if code := p.wait(t); code != 1 {
		t.Fatalf("exit code %d, want 1; stderr:\n%s", code, strings.Join(p.stderr(), "\n"))
	}
	out := strings.Join(p.stderr(), "\n")
	if !strings.Contains(out, proxyProtocolNeedsTrusted) || !strings.Contains(out, "cannot start") {
		t.Fatalf("stderr does not say why:\n%s", out)
	}
}

// With -log-format json every line on stderr is one JSON object, including
// what go-redis logs about a Redis that refuses connections and what the
// embedded NATS server logs (its notices, at -log-level debug).
func TestLibraryLogsAreJSON(t *testing.T) {
	closed, err := freeport.Pick() // nothing listens here
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p := startEdgeProcess(t, append(childBaseArgs(), "-log-format", "json", "-log-level", "debug",
		"-redis-url", fmt.Sprintf("redis://127.0.0.1:%d/0", closed))...)
	seen := func(lib string) bool {
		for _, l := range p.stderr() {
			if strings.Contains(l, `"lib":"`+lib+`"`) {
				return true
			}
		}
		return false
	}
	// go-redis's pool reports the refused dials ("failed to dial"), routed
	// or not: wait for that line, then judge its shape.
	eventually(t, "go-redis's dial failure in the log (or the process ending)", func() bool {
		return strings.Contains(strings.Join(p.stderr(), "\n"), "failed to dial") || p.exited()
	})
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	p.wait(t)
	lines := p.stderr()
	for i, l := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil || obj["msg"] == nil || obj["level"] == nil {
			t.Errorf("stderr line %d is not a slog JSON object: %q", i+1, l)
		}
	}
	for _, lib := range []string{"go-redis", "nats-server"} {
		if !seen(lib) {
			t.Errorf("no %s line in the process's output:\n%s", lib, strings.Join(lines, "\n"))
		}
	}
	var redisLine string
	dials := 0
	for _, l := range lines {
		if strings.Contains(l, `"lib":"go-redis"`) {
			if redisLine == "" {
				redisLine = l
			}
			if strings.Contains(l, "failed to dial") {
				dials++
			}
		}
	}
	// Unlimited, go-redis logs a refused dial several times a second.
	if limit := 1 + int(time.Since(start)/redisLogEvery); dials > limit {
		t.Errorf("%d go-redis dial lines in %v, want at most %d (one per %v)", dials, time.Since(start), limit, redisLogEvery)
	}
	if !strings.Contains(redisLine, "dial") || strings.Contains(redisLine, `\n"`) {
		t.Errorf("go-redis line %q: want its dial failure as one message without a trailing newline", redisLine)
	}
}

// domainName in events comes from -domain-name when set, whatever Host the
// client sends; without it, it is the client's Host (the previous behaviour,
// which let a client put any name in its events).
func TestDomainNameFromConfiguration(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"configured", []string{"-domain-name", "ws.example.com"}, "ws.example.com"},
		{"from the Host header", nil, "spoofed.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startTestEdge(t, testEdgeConfig(t, tc.args...))
			var ev *events
			startBackend(t, e.NATSURL(), func(b *backend.Backend) { ev = recordEvents(t, b) })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws://"+e.WSAddr()+"/", &websocket.DialOptions{Host: "spoofed.example:443"})
			if err != nil {
				t.Fatal(err)
			}
			var id string
			eventually(t, "CONNECT", func() bool {
				ev.mu.Lock()
				defer ev.mu.Unlock()
				for k := range ev.connects {
					id = k
				}
				return id != ""
			})
			if got := ev.connect(id).RequestContext.DomainName; got != tc.want {
				t.Fatalf("CONNECT domainName = %q, want %q", got, tc.want)
			}
			c.Close(websocket.StatusNormalClosure, "")
			eventually(t, "DISCONNECT", func() bool { return len(ev.disconnect(id)) == 1 })
			if got := ev.disconnect(id)[0].RequestContext.DomainName; got != tc.want {
				t.Fatalf("DISCONNECT domainName = %q, want %q", got, tc.want)
			}
		})
	}
}

// The node's own @connections API (unauthenticated, on loopback by
// default) refuses a browser's cross-origin POST; -api-allowed-origins lets
// a listed one through.
func TestEdgeAPIRefusesForeignOrigin(t *testing.T) {
	e := startTestEdge(t, testEdgeConfig(t, "-api-allowed-origins", "https://admin.example"))
	var ev *events
	startBackend(t, e.NATSURL(), func(b *backend.Backend) { ev = recordEvents(t, b) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+e.WSAddr()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	var id string
	eventually(t, "CONNECT", func() bool {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		for k := range ev.connects {
			id = k
		}
		return id != ""
	})
	post := func(origin, body string) int {
		req, _ := http.NewRequest("POST", "http://"+e.APIAddr()+"/@connections/"+id, strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusForbidden && !bytes.Contains(b, []byte(`"__type":"ForbiddenException"`)) {
			t.Fatalf("403 body %s: want the AWS error shape", b)
		}
		return resp.StatusCode
	}
	if got := post("https://evil.example", "forged"); got != http.StatusForbidden {
		t.Fatalf("foreign Origin: %d, want 403", got)
	}
	if got := post("https://admin.example", "listed"); got != http.StatusOK {
		t.Fatalf("listed Origin: %d, want 200", got)
	}
	_, data, err := c.Read(ctx)
	if err != nil || string(data) != "listed" {
		t.Fatalf("client got %q (%v), want only the listed origin's message", data, err)
	}
}

// The attack on a real node: a client that reaches -listen directly sends a
// PROXY header claiming 6.6.6.6. With -trusted-proxies naming only the load
// balancer (127.0.0.2 here), the client's header is not believed (its
// handshake fails) while the load balancer's is: one CONNECT, from 6.6.6.6
// through 127.0.0.2, none with a spoofed address from 127.0.0.1.
func TestProxyProtocolHeaderFromUntrustedPeerNotBelieved(t *testing.T) {
	e := startTestEdge(t, testEdgeConfig(t, "-proxy-protocol", "optional", "-trusted-proxies", "127.0.0.2"))
	var ev *events
	startBackend(t, e.NATSURL(), func(b *backend.Backend) { ev = recordEvents(t, b) })
	const upgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	handshake := func(from string) string {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", e.WSAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "PROXY TCP4 6.6.6.6 127.0.0.1 1111 8080\r\n"+upgrade); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	if got := handshake("127.0.0.1"); strings.HasPrefix(got, "HTTP/1.1 101") {
		t.Fatalf("untrusted peer's PROXY header: %q, want the handshake refused", got)
	}
	if got := handshake("127.0.0.2"); !strings.HasPrefix(got, "HTTP/1.1 101") {
		t.Fatalf("trusted proxy's PROXY header: %q, want 101", got)
	}
	eventually(t, "CONNECT through the trusted proxy", func() bool {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		return len(ev.connects) > 0
	})
	ev.mu.Lock()
	defer ev.mu.Unlock()
	spoofed := 0
	for _, c := range ev.connects {
		if c.RequestContext.Identity.SourceIP == "6.6.6.6" {
			spoofed++
		}
	}
	if len(ev.connects) != 1 || spoofed != 1 {
		t.Fatalf("%d CONNECTs, %d with 6.6.6.6: want exactly the trusted proxy's one", len(ev.connects), spoofed)
	}
}

func TestAPIBrowserAndSigV4FlagsValidated(t *testing.T) {
	for args, want := range map[string]string{
		"-api-sigv4-host gw.example":          "-api-sigv4-host pins the host of SigV4 signatures: it needs -api-access-keys",
		"-api-allowed-origins admin.example":  `-api-allowed-origins "admin.example"`,
		"-api-allowed-origins https://a.b/c/": `-api-allowed-origins "https://a.b/c/"`,
	} {
		c := testEdgeConfig(t, strings.Fields(args)...)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate = %v, want %q", args, err, want)
		}
	}
	c := testEdgeConfig(t, "-api-access-keys", "AKID:secret", "-api-sigv4-host", "gw.example,gw.example:9090",
		"-api-allowed-origins", "https://admin.example,http://127.0.0.1:8000")
	if err := c.Validate(); err != nil {
		t.Fatalf("valid flags: %v", err)
	}
}
