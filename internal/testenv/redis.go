package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// redisStartTimeout bounds how long a redis-server may take to answer PING.
// Generous: CI machines are slow and shared.
const redisStartTimeout = 20 * time.Second

// RedisOption adjusts a Redis started by StartRedis.
type RedisOption func(*redisOptions)

type redisOptions struct {
	args []string
}

// WithRedisArgs passes extra command-line arguments to redis-server, e.g.
// WithRedisArgs("--maxmemory", "64mb").
func WithRedisArgs(args ...string) RedisOption {
	return func(o *redisOptions) { o.args = append(o.args, args...) }
}

// Redis is a real redis-server process owned by one test: loopback only, a
// random port, no persistence, its own temporary directory.
type Redis struct {
	t    testing.TB
	dir  string
	port int
	args []string

	mu   sync.Mutex
	proc *redisProc
}

// StartRedis starts redis-server on a free 127.0.0.1 port and waits until it
// answers PING. The process is killed when the test ends. It never touches the
// machine's own Redis on 6379.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	var o redisOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin := lookRedisBinary(t, "redis-server")
	r := &Redis{t: t, dir: t.TempDir(), args: o.args}
	t.Cleanup(r.stop)
	// A free port can be taken by someone else between probing and binding;
	// try a few.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort(false)
		if err != nil {
			t.Fatalf("testenv: find free port: %v", err)
		}
		r.port = port
		if lastErr = r.start(bin); lastErr == nil {
			return r
		}
	}
	t.Fatalf("testenv: start redis-server: %v", lastErr)
	return nil
}

// Addr is host:port of the server.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is a redis:// URL for the server, usable with redis.ParseURL.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Kill stops the server with SIGKILL, as a crash would. Clients see
// connection errors until Restart.
func (r *Redis) Kill() {
	r.t.Helper()
	r.stop()
}

// Restart kills the server if it runs and starts a new one on the same port
// with no data, as after a crash of a Redis without persistence.
func (r *Redis) Restart() {
	r.t.Helper()
	r.stop()
	bin := lookRedisBinary(r.t, "redis-server")
	// The old socket may linger briefly after SIGKILL; retry until the port
	// is ours again.
	deadline := time.Now().Add(redisStartTimeout)
	for {
		err := r.start(bin)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("testenv: restart redis-server on port %d: %v", r.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Redis) start(bin string) error {
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--protected-mode", "no",
		"--logfile", filepath.Join(r.dir, "redis.log"),
	}
	args = append(args, r.args...)
	proc, err := startRedisProcess(bin, args, r.Addr())
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.proc = proc
	r.mu.Unlock()
	return nil
}

func (r *Redis) stop() {
	r.mu.Lock()
	proc := r.proc
	r.proc = nil
	r.mu.Unlock()
	proc.kill()
}

// RedisCluster is a real Redis Cluster of masters only (no replicas) on
// loopback, owned by one test.
type RedisCluster struct {
	nodes []*Redis
}

// StartRedisCluster starts masters redis-server processes in cluster mode,
// joins them with redis-cli --cluster create, and waits until every node
// reports cluster_state:ok. The processes are killed when the test ends.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("testenv: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	server := lookRedisBinary(t, "redis-server")
	cli := lookRedisBinary(t, "redis-cli")
	c := &RedisCluster{}
	for i := 0; i < masters; i++ {
		n := &Redis{t: t, dir: t.TempDir()}
		n.args = []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(n.dir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
		}
		t.Cleanup(n.stop)
		var lastErr error
		started := false
		for attempt := 0; attempt < 5 && !started; attempt++ {
			// The cluster bus listens on port+10000, which must be free too.
			port, err := freePort(true)
			if err != nil {
				t.Fatalf("testenv: find free port: %v", err)
			}
			n.port = port
			if lastErr = n.start(server); lastErr == nil {
				started = true
			}
		}
		if !started {
			t.Fatalf("testenv: start cluster node: %v", lastErr)
		}
		c.nodes = append(c.nodes, n)
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(redisStartTimeout)
	for _, n := range c.nodes {
		for {
			info, err := redisCommand(n.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("testenv: cluster node %s not ok: %v %q", n.Addr(), err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

// Addrs lists host:port of every master.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

func lookRedisBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		// A missing binary is a broken environment, not a reason to skip:
		// .ci/run installs it.
		t.Fatalf("testenv: %s not found on PATH: %v", name, err)
	}
	return p
}

// redisProc is a running redis-server and the channel its Wait result
// arrives on; the goroutine that waits is reaped by kill.
type redisProc struct {
	cmd    *exec.Cmd
	exited chan error
}

// startRedisProcess runs redis-server and waits until addr answers PING or
// the process exits.
func startRedisProcess(bin string, args []string, addr string) (*redisProc, error) {
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &redisProc{cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	deadline := time.Now().Add(redisStartTimeout)
	for {
		select {
		case err := <-p.exited:
			return nil, fmt.Errorf("redis-server on %s exited: %v: %s", addr, err, logTail(args))
		default:
		}
		if reply, err := redisCommand(addr, "PING"); err == nil && reply == "PONG" {
			return p, nil
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("redis-server on %s did not answer PING within %v", addr, redisStartTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits until the process is reaped. Safe on nil.
func (p *redisProc) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// logTail returns the end of the log file named in args, for error messages.
func logTail(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--logfile" {
			b, err := os.ReadFile(args[i+1])
			if err != nil {
				return ""
			}
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			return string(b)
		}
	}
	return ""
}

// freePort returns a loopback TCP port that is free now; with bus, one whose
// cluster bus port (port+10000) is free too.
func freePort(bus bool) (int, error) {
	for attempt := 0; attempt < 50; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !bus {
			l.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			l.Close()
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, errors.New("no free port pair found")
}

// errRedisNil is redisCommand's answer for a nil reply (a missing key).
var errRedisNil = errors.New("redis: nil")

// redisCommand sends one command in RESP and returns a simple, bulk or
// integer reply as a string. Enough for PING and CLUSTER INFO without a client
// library.
func redisCommand(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if n == -1 {
			return "", errRedisNil
		}
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
