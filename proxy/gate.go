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
// Errors: ErrQueueTimeout, ErrQueueFull (only before c first waits),
// ErrAppRemoved, or the context's error.
func (b *backend) acquire(c *call) (*version, *instance, error) {
	for {
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
			// Every instance refused c: it waits like a held request
			// (it counts as one), within the same bound.
			if err := b.admitLocked(c); err != nil {
				b.mu.Unlock()
				return nil, nil, err
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
		if err := b.admitLocked(c); err != nil {
			b.mu.Unlock()
			return nil, nil, err
		}
		if c.wake == nil {
			c.wake = make(chan struct{}, 1)
		}
		b.queue.insertByArrival(c)
		b.armExpiryLocked(c.deadline)
		b.mu.Unlock()
		return b.wait(c)
	}
}

// admitLocked lets c wait at the gate, in the queue or in a backoff, unless
// max_queued requests wait already: then ErrQueueFull, at once. A request
// that has waited once is not refused again (it was admitted; it comes back
// after a failed connect or a dead app). b.mu is held.
func (b *backend) admitLocked(c *call) error {
	if c.holding {
		return nil
	}
	if b.heldLocked() >= b.opts.MaxQueued {
		return fmt.Errorf("%w: app %s already holds %d requests", ErrQueueFull, b.name, b.opts.MaxQueued)
	}
	c.holding = true
	return nil
}

// wait blocks while c is in the queue. A releaser that takes c out of the
// queue has already assigned it (or failed it), so a woken request never
// finds the gate closed again and never spins.
//
// Its deadline passing is a wake-up too: the app's expiry timer takes it
// out of the queue with ErrQueueTimeout (expireLocked).
func (b *backend) wait(c *call) (*version, *instance, error) {
	defer func(start time.Time) { c.held += time.Since(start) }(time.Now())
	var err error
	select {
	case <-c.wake:
		return c.takeAssignment()
	case <-c.client.Done():
		err = c.client.Err()
	}
	b.mu.Lock()
	if c.list == &b.queue {
		b.queue.remove(c)
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

// armExpiryLocked makes the expiry timer fire by deadline, the deadline of
// a request just queued.
func (b *backend) armExpiryLocked(deadline time.Time) {
	if !b.expiryAt.IsZero() && !deadline.Before(b.expiryAt) {
		return
	}
	b.expiryAt = deadline
	d := time.Until(deadline)
	if b.expiry == nil {
		b.expiry = time.AfterFunc(d, b.expire)
	} else {
		b.expiry.Reset(d)
	}
}

// expire is the expiry timer's function.
func (b *backend) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireLocked(time.Now())
}

// expireLocked ends the held requests whose deadline has passed with
// ErrQueueTimeout, and sets the timer for the next deadline. Deadlines are
// arrival + queue_timeout and the queue is in arrival order, so they are
// the first ones: O(1) each. Only for a while after queue_timeout was
// lowered may a later one expire first; then the whole queue is looked at.
func (b *backend) expireLocked(now time.Time) {
	b.expiryAt = time.Time{}
	var next time.Time
	if now.Before(b.unorderedUntil) {
		for c := b.queue.head; c != nil; {
			after := c.next
			if !now.Before(c.deadline) {
				b.timeoutLocked(c)
			} else if next.IsZero() || c.deadline.Before(next) {
				next = c.deadline
			}
			c = after
		}
	} else {
		for c := b.queue.head; c != nil && !now.Before(c.deadline); c = b.queue.head {
			b.timeoutLocked(c)
		}
		if h := b.queue.head; h != nil {
			next = h.deadline
		}
	}
	if !next.IsZero() {
		b.armExpiryLocked(next)
	}
}

// timeoutLocked takes c, whose deadline passed, out of the queue and wakes
// it with ErrQueueTimeout.
func (b *backend) timeoutLocked(c *call) {
	b.queue.remove(c)
	c.err = b.timeoutErrorLocked()
	c.wake <- struct{}{}
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
