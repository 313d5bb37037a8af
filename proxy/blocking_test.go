package proxy

import "testing"

func woken(w *waiter) bool {
	select {
	case <-w.wake:
		return true
	default:
		return false
	}
}

// TestBlockersFIFO: a write wakes only the first waiter of a key; whoever
// leaves the line wakes the next.
func TestBlockersFIFO(t *testing.T) {
	bs := newBlockers()
	k := [][]byte{[]byte("k")}
	w1 := bs.add(1, 0, k, "", false)
	w2 := bs.add(2, 0, [][]byte{[]byte("k"), []byte("other"), []byte("k")}, "", false)
	w3 := bs.add(3, 1, k, "", false) // another database
	bs.written(0, k, false)
	if !woken(w1) || woken(w2) || woken(w3) {
		t.Fatal("a write to k in db 0 must wake only the first waiter of k in db 0")
	}
	bs.written(0, [][]byte{[]byte("other")}, false)
	if woken(w1) || !woken(w2) {
		t.Fatal("a write to other must wake w2, first in its line")
	}
	bs.remove(w1)
	if !woken(w2) {
		t.Fatal("w1 leaving the line of k must wake w2")
	}
	if !bs.unblockConn(2, true) || bs.unblockConn(1, false) {
		t.Fatal("CLIENT UNBLOCK must find w2 and not w1")
	}
	if asErr := <-w2.unblock; !asErr {
		t.Fatal("CLIENT UNBLOCK ERROR must say so")
	}
	bs.written(0, nil, true)
	if !woken(w2) || !woken(w3) {
		t.Fatal("a write to every key must wake every line's first")
	}
	bs.remove(w2)
	bs.remove(w3)
	if bs.count.Load() != 0 || len(bs.queues) != 0 || len(bs.byConn) != 0 {
		t.Fatalf("left over: %d %v %v", bs.count.Load(), bs.queues, bs.byConn)
	}
}

// TestBlockersLines: a write wakes the first of each line (XREADGROUP's
// groups) and every reader (XREAD); leaving the head of a line wakes the
// next of that line only.
func TestBlockersLines(t *testing.T) {
	bs := newBlockers()
	k := [][]byte{[]byte("k")}
	g1a := bs.add(1, 0, k, "group:g1", false)
	r1 := bs.add(2, 0, k, "", true)
	g1b := bs.add(3, 0, k, "group:g1", false)
	g2 := bs.add(4, 0, k, "group:g2", false)
	r2 := bs.add(5, 0, k, "", true)
	bs.written(0, k, false)
	if !woken(g1a) || !woken(r1) || woken(g1b) || !woken(g2) || !woken(r2) {
		t.Fatal("a write must wake the first of each line and every reader")
	}
	bs.remove(r1)
	if woken(g1a) || woken(g1b) || woken(g2) || woken(r2) {
		t.Fatal("a reader leaving wakes nobody")
	}
	bs.remove(g1a)
	if !woken(g1b) || woken(g2) || woken(r2) {
		t.Fatal("the head of g1 leaving must wake the next of g1 only")
	}
	bs.remove(g1b)
	bs.remove(g2)
	bs.remove(r2)
	if bs.count.Load() != 0 || len(bs.queues) != 0 {
		t.Fatalf("left over: %d %v", bs.count.Load(), bs.queues)
	}
}

func TestNullReply(t *testing.T) {
	for raw, want := range map[string]bool{"*-1\r\n": true, "$-1\r\n": true, "_\r\n": true, "$1\r\nx\r\n": false, "*0\r\n": false} {
		if got := isNullReply([]byte(raw)); got != want {
			t.Errorf("isNullReply(%q) = %v", raw, got)
		}
	}
}
