package proxy

import (
	"fmt"
	"time"
)

// backoff is how long a request waits before trying again when every ready
// instance refused its connection and nothing changed meanwhile: long enough
// not to spin on a dead socket, short enough that an instance whose socket
// is about to appear is used promptly. A state change (Serve, SetInstance,
// Release) ends the wait at once.
const backoff = 25 * time.Millisecond

// acquire is the gate. It assigns c to a ready instance of the serving
// version and registers c in that version's in-flight registry, in one
// critical section. While the app is paused or its serving version has no
// ready instance, c waits in the app's FIFO queue until a releaser assigns it
// (in arrival order), the request's context ends, or its deadline (arrival +
// queue_timeout) passes.
//
// Instances in c.avoid refused c already; when every ready instance is in
// it, c waits for a state change or backoff, then tries them all again.
//
// Errors: ErrQueueTimeout, ErrQueueFull (only on c's first acquire),
// ErrAppRemoved, or the context's error.
func (b *backend) acquire(c *call) (*version, *instance, error) {
	// Only a request's first attempt can be refused for a full queue: one
	// coming back after a failed connect or a dead app was admitted already.
	first := c.deadline.IsZero()
	for ; ; first = false {
		b.mu.Lock()
		if c.deadline.IsZero() {
			c.deadline = c.arrival.Add(b.opts.QueueTimeout)
		}
		if b.removed {
			b.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %s", ErrAppRemoved, b.name)
		}
		if b.openLocked() {
			v := b.serving
			if in := v.pickLocked(c.avoid); in != nil {
				v.registerLocked(c, in)
				b.mu.Unlock()
				return v, in, nil
			}
			if err := b.backoffLocked(c); err != nil {
				return nil, nil, err
			}
			continue
		}
		if !time.Now().Before(c.deadline) {
			err := b.timeoutErrorLocked()
			b.mu.Unlock()
			return nil, nil, err
		}
		if first && b.heldLocked() >= b.opts.MaxQueued {
			max := b.opts.MaxQueued
			b.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: app %s already holds %d requests", ErrQueueFull, b.name, max)
		}
		if c.wake == nil {
			c.wake = make(chan struct{}, 1)
		}
		b.queue.insertByArrival(c)
		b.mu.Unlock()
		return b.wait(c)
	}
}

// wait blocks while c is in the queue. A releaser that takes c out of the
// queue has already assigned it (or failed it), so a woken request never
// finds the gate closed again and never spins.
func (b *backend) wait(c *call) (*version, *instance, error) {
	defer func(start time.Time) { c.held += time.Since(start) }(time.Now())
	timer := time.NewTimer(time.Until(c.deadline))
	defer timer.Stop()
	var err error
	select {
	case <-c.wake:
		return c.takeAssignment()
	case <-c.client.Done():
		err = c.client.Err()
	case <-timer.C:
	}
	b.mu.Lock()
	if c.list == &b.queue {
		b.queue.remove(c)
		if err == nil {
			err = b.timeoutErrorLocked()
		}
		b.mu.Unlock()
		return nil, nil, err
	}
	b.mu.Unlock()
	// A releaser took c out of the queue before this goroutine could; its
	// token is already in c.wake (sent under b.mu).
	<-c.wake
	v, in, aerr := c.takeAssignment()
	if aerr != nil {
		return nil, nil, aerr
	}
	if err := c.client.Err(); err != nil {
		b.finish(c)
		return nil, nil, err
	}
	// Released at the moment its time ran out: go on.
	return v, in, nil
}

// takeAssignment returns what the releaser left in c. Only call it after
// receiving c's wake token, which orders it after the releaser's writes.
func (c *call) takeAssignment() (*version, *instance, error) {
	if err := c.err; err != nil {
		c.err = nil
		return nil, nil, err
	}
	return c.version, c.inst, nil
}

// backoffLocked waits, with b.mu released, until the app's state changes,
// backoff passes, c's context ends or its deadline passes (ErrQueueTimeout).
// It is called with b.mu held and returns with it released. c counts as held
// meanwhile.
func (b *backend) backoffLocked(c *call) error {
	changed := b.changed
	b.backingOff++
	b.mu.Unlock()

	var err error
	if wait := min(backoff, time.Until(c.deadline)); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-c.client.Done():
			err = c.client.Err()
		}
		t.Stop()
	}

	b.mu.Lock()
	b.backingOff--
	if err == nil && !time.Now().Before(c.deadline) {
		err = b.timeoutErrorLocked()
	}
	b.mu.Unlock()
	c.avoid = c.avoid[:0]
	return err
}

// releaseLocked assigns held requests, in arrival order, while the gate is
// open: O(1) each, so releasing 10,000 requests is one pass over the queue.
func (b *backend) releaseLocked() {
	for b.queue.head != nil && b.openLocked() {
		c := b.queue.popFront()
		v := b.serving
		in := v.pickLocked(c.avoid)
		if in == nil {
			in = v.pickLocked(nil)
		}
		v.registerLocked(c, in)
		c.wake <- struct{}{}
	}
}

// failQueueLocked ends every held request with err.
func (b *backend) failQueueLocked(err error) {
	for c := b.queue.popFront(); c != nil; c = b.queue.popFront() {
		c.err = fmt.Errorf("%w: %s", err, b.name)
		c.wake <- struct{}{}
	}
}

// timeoutErrorLocked says why a request waited too long.
func (b *backend) timeoutErrorLocked() error {
	why := "no instance ready"
	if b.paused {
		why = "paused"
	}
	return fmt.Errorf("%w: app %s: %s for %s", ErrQueueTimeout, b.name, why, b.opts.QueueTimeout)
}
