// Package beat puts periodic wakeups on one grid of the wall clock.
package beat

import "time"

// A process idle but for its periodic signals (liveness bytes, stream
// pings, health checks) pays mostly for waking up: on a virtual machine a
// wakeup from idle costs tens of microseconds whatever little it does. So
// every periodic signal of raftproxy fires on one grid of the wall clock,
// at whole multiples of its period: the signals of all of a process's
// peers, streams, groups and redis-servers then fall due together and
// share one wakeup, and so do those of the other processes (a byte sent on
// the beat arrives while its receiver is awake for the same beat), as far
// as the machines' clocks agree. Only the phase comes from the clock; nothing depends on it
// being right.

// Until is how long from now until the next whole multiple of every
// on the wall clock: never zero, at most every.
func Until(every time.Duration) time.Duration {
	return After(time.Now(), every)
}

// After is Until as of now: how long from now until the next whole
// multiple of every.
func After(now time.Time, every time.Duration) time.Duration {
	if every <= 0 {
		return time.Nanosecond
	}
	n := int64(every)
	return time.Duration(n - now.UnixNano()%n)
}

// OnAfter is how long from now until the first beat of every that is
// at least d away: a backed-off period kept on the grid.
func OnAfter(d, every time.Duration) time.Duration {
	return d + After(time.Now().Add(d), every)
}
