package beat

import (
	"testing"
	"time"
)

func TestBeatAfter(t *testing.T) {
	base := time.Unix(1_700_000_000, 0) // a whole second
	for _, c := range []struct {
		now   time.Duration // after base
		every time.Duration
		want  time.Duration
	}{
		{0, 250 * time.Millisecond, 250 * time.Millisecond}, // on a beat: the next one
		{time.Millisecond, 250 * time.Millisecond, 249 * time.Millisecond},
		{260 * time.Millisecond, 250 * time.Millisecond, 240 * time.Millisecond},
		{999 * time.Millisecond, time.Second, time.Millisecond},
		{5 * time.Millisecond, 0, time.Nanosecond},
	} {
		if got := After(base.Add(c.now), c.every); got != c.want {
			t.Errorf("After(+%v, %v) = %v, want %v", c.now, c.every, got, c.want)
		}
	}
	// Two callers at different moments wait for the same instant.
	a := base.Add(10 * time.Millisecond)
	b := base.Add(170 * time.Millisecond)
	every := 250 * time.Millisecond
	if ea, eb := a.Add(After(a, every)), b.Add(After(b, every)); !ea.Equal(eb) {
		t.Errorf("beats differ: %v and %v", ea, eb)
	}
}
