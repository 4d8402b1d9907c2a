package testenv

// Changed tells waiters that something changed: Wait returns a channel the
// next Fire closes. Its owner's mutex guards it; the zero value is ready.
type Changed struct{ ch chan struct{} }

// Wait returns the channel the next Fire closes.
func (c *Changed) Wait() <-chan struct{} {
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// Fire wakes every waiter.
func (c *Changed) Fire() {
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}
