package edge

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// reactor watches every open connection's socket with one epoll instance and
// hands readable connections to a fixed pool of workers. EPOLLONESHOT makes a
// connection belong to at most one worker at a time; the worker re-arms it
// when done, so frames of one connection are handled in order.
type reactor struct {
	epfd   int
	wakefd int // eventfd that ends the wait loop on shutdown

	mu sync.RWMutex
	// conns holds the connections by fd (the kernel keeps fds dense: a
	// slot, not a map entry); entries carry a generation against fd reuse.
	// It only grows, and add grows it before the fd is armed, so every fd
	// epoll reports is in range.
	conns []*Conn
	gen   uint32

	work   chan *Conn
	loopWG sync.WaitGroup
	wg     sync.WaitGroup // workers
}

func newReactor() (*reactor, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	return &reactor{epfd: epfd, wakefd: wakefd}, nil
}

// start runs the wait loop and n workers.
func (r *reactor) start(workers int) {
	r.work = make(chan *Conn, 4*workers)
	r.loopWG.Add(1)
	go r.loop()
	for i := 0; i < workers; i++ {
		r.wg.Add(1)
		go r.worker()
	}
}

// stop ends the loop and the workers and waits for them. Connections must be
// closed first.
func (r *reactor) stop() {
	var one = [8]byte{1}
	_, _ = unix.Write(r.wakefd, one[:])
	r.loopWG.Wait()
	if r.work != nil {
		close(r.work)
	}
	r.wg.Wait()
	r.closeFDs()
}

func (r *reactor) closeFDs() {
	unix.Close(r.epfd)
	unix.Close(r.wakefd)
}

func (r *reactor) loop() {
	defer r.loopWG.Done()
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(r.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			ev := events[i]
			if int(ev.Fd) == r.wakefd {
				return
			}
			r.mu.RLock()
			c := r.conns[ev.Fd]
			stale := c == nil || c.gen != uint32(ev.Pad) // gen read under mu: a resumed connection is added again
			r.mu.RUnlock()
			if stale {
				continue // closed meanwhile; the fd may already be reused
			}
			r.work <- c
		}
	}
}

func (r *reactor) worker() {
	defer r.wg.Done()
	for c := range r.work {
		// EPOLLONESHOT already keeps two workers off one connection; the
		// lock states that to the race detector, which cannot see the
		// ordering through epoll_ctl/epoll_wait.
		c.readMu.Lock()
		keep := c.onReadable()
		c.readMu.Unlock()
		if keep {
			r.arm(c, unix.EPOLL_CTL_MOD)
		}
	}
}

// add registers an upgraded connection. If it already holds buffered bytes
// (frames sent together with the handshake) it is handed to a worker first.
//
// A close may land while this runs (an API DELETE right after the 101):
// teardown moves the phase to closed before it unregisters, and add
// looks at the phase after it registers, so either teardown finds the entry
// or add finds closed and drops it.
func (r *reactor) add(c *Conn, buffered bool) error {
	r.mu.Lock()
	r.gen++
	c.gen = r.gen
	if c.fd >= len(r.conns) {
		r.conns = append(r.conns, make([]*Conn, c.fd+1-len(r.conns))...)
	}
	r.conns[c.fd] = c
	r.mu.Unlock()
	if !c.phase().reading() {
		r.forget(c)
		return nil
	}
	if buffered {
		// The worker arms it (with ADD semantics via arm's fallback).
		r.work <- c
		return nil
	}
	return r.arm(c, unix.EPOLL_CTL_ADD)
}

// arm (re-)enables one readiness notification for c, unless c has closed.
// It runs inside the socket's Control, which holds the descriptor open
// meanwhile: teardown's close waits for it, so the fd number cannot be
// reused under an arm that raced the teardown, and a registration such an
// arm re-adds is removed by that close with the socket.
func (r *reactor) arm(c *Conn, op int) error {
	if !c.phase().reading() {
		return nil
	}
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd), Pad: int32(c.gen)}
		err = unix.EpollCtl(r.epfd, op, int(fd), &ev)
		if err == unix.ENOENT && op == unix.EPOLL_CTL_MOD {
			err = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr != nil {
		return nil // closed meanwhile: teardown unregisters it
	}
	if err != nil {
		return fmt.Errorf("epoll arm fd %d: %w", c.fd, err)
	}
	return nil
}

// remove unregisters c. Called by teardown after the phase moved to closed,
// before the socket closes.
func (r *reactor) remove(c *Conn) {
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	r.forget(c)
}

// forget drops c from the fd index, if it is still c's entry.
func (r *reactor) forget(c *Conn) {
	r.mu.Lock()
	if c.fd < len(r.conns) && r.conns[c.fd] == c {
		r.conns[c.fd] = nil
	}
	r.mu.Unlock()
}
