package raftnode

// signal wakes the reader of ch, a channel of capacity one, without
// waiting: a wake already pending covers this one, since the reader looks
// at everything there is once it wakes.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
