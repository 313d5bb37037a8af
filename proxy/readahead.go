package proxy

import "time"

// readAhead reads the client's next commands while one of its commands is
// blocked: redis keeps reading a blocked client's socket too, which is how
// a disconnect ends the wait.
type readAhead struct {
	res  chan readResult
	cont chan bool
}

type readResult struct {
	args [][]byte
	err  error
}

func (c *conn) startAhead() {
	ra := &readAhead{res: make(chan readResult, 1), cont: make(chan bool)}
	c.ahead = ra
	go func() {
		for {
			args, err := c.rd.ReadCommand()
			ra.res <- readResult{args, err}
			if err != nil {
				return
			}
			if more, ok := <-ra.cont; !more || !ok {
				return
			}
		}
	}()
}

// stopAhead ends a read-ahead goroutine when the reader stops.
func (c *conn) stopAhead() {
	if c.ahead != nil {
		close(c.ahead.cont)
		c.ahead = nil
	}
}

// nextCommand returns the client's next command for dispatch: while a
// command is blocked it reads ahead and holds what arrives.
func (c *conn) nextCommand() ([][]byte, error) {
	for {
		if c.blockEnd != nil {
			if c.s.cfg.IdleTimeout > 0 {
				// A blocked client is not idle (redis's timeout spares it
				// too): the read-ahead waits without a deadline.
				c.nc.SetReadDeadline(time.Time{})
			}
			if c.ahead == nil && c.readErr == nil {
				c.startAhead()
			}
			var res chan readResult
			if c.ahead != nil {
				res = c.ahead.res
			}
			select {
			case <-c.blockEnd:
				c.blockEnd = nil
				// Idle again: the read-ahead's pending read gets back the
				// deadline lifted while blocked.
				c.idleDeadline()
			case r := <-res:
				if r.err != nil {
					c.ahead, c.readErr = nil, r.err
					c.goneOnce.Do(func() { close(c.gone) })
					continue
				}
				c.held = append(c.held, r.args)
				c.ahead.cont <- true
			}
			continue
		}
		if len(c.held) > 0 {
			args := c.held[0]
			c.held = c.held[1:]
			return args, nil
		}
		if c.ahead != nil {
			r := <-c.ahead.res
			if r.err != nil {
				c.ahead, c.readErr = nil, r.err
				return nil, r.err
			}
			c.ahead.cont <- false
			c.ahead = nil
			return r.args, nil
		}
		if c.readErr != nil {
			return nil, c.readErr
		}
		// Set here, where no read-ahead goroutine can be using c.rd: AUTH
		// and RESET change the limits of the commands after them.
		c.rd.Limit(c.s.cfg.MaxRequestBytes, !c.authed)
		c.idleDeadline()
		return c.rd.ReadCommand()
	}
}
