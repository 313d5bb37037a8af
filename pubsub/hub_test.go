package pubsub

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
)

// A PUBLISH applied by one shard's group reaches the subscribers of every
// shard of the node, once each, and only those subscribed before it by its
// own group's log; its count is the publishing shard's. SPUBLISH stays in
// its shard.
func TestHubFanOut(t *testing.T) {
	h := NewHub()
	var commitA, commitB atomic.Uint64
	a, b := NewBroker(), NewBroker()
	h.Join(a, commitA.Load)
	h.Join(b, commitB.Load)
	sa := NewSubscriber(1<<20, func() {})
	sb := NewSubscriber(1<<20, func() {})
	commitA.Store(7)
	commitB.Store(40)
	// sa subscribes at a (its group at 7, b's at 40).
	a.Add(Channel, "news", sa, a.Marks(7))
	a.Add(Shard, "news", sa, a.Marks(7))
	b.Add(Pattern, "n*", sb, b.Marks(40))

	if n := b.Publish(40, []byte("news"), []byte("old"), false); n != 0 {
		t.Fatalf("b's entry 40 counted %d receivers; want 0 (sb subscribed at 40)", n)
	}
	if n := b.Publish(41, []byte("news"), []byte("new"), false); n != 1 {
		t.Fatalf("b's entry 41 counted %d receivers; want b's own 1", n)
	}
	if n := a.Publish(8, []byte("news"), []byte("a8"), false); n != 1 {
		t.Fatalf("a's entry 8 counted %d receivers; want a's own 1", n)
	}
	if n := b.Publish(42, []byte("news"), []byte("shard"), true); n != 0 {
		t.Fatalf("an SPUBLISH on b counted %d receivers; want 0", n)
	}
	got := string(bytes.Join(sa.Take(true), nil))
	want := "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$3\r\nnew\r\n" + "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\na8\r\n"
	if got != want {
		t.Fatalf("the subscriber on a got %q\nwant %q", got, want)
	}
	got = string(bytes.Join(sb.Take(true), nil))
	want = "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$3\r\nnew\r\n" + "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\na8\r\n"
	if got != want {
		t.Fatalf("the subscriber on b got %q\nwant %q", got, want)
	}

	// A group that joins after a subscription: all its messages are news.
	c := NewBroker()
	h.Join(c, func() uint64 { return 100 })
	c.Publish(1, []byte("news"), []byte("c1"), false)
	if got := string(bytes.Join(sa.Take(true), nil)); got != "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nc1\r\n" {
		t.Fatalf("a message of a group newer than the subscription: got %q", got)
	}
	// A broker that left reaches only its own subscribers.
	h.Leave(b)
	b.Publish(50, []byte("news"), []byte("gone"), false)
	if got := sa.Take(true); len(got) != 0 {
		t.Fatalf("a broker out of the hub still reached another's subscriber: %q", got)
	}
}

// Groups publish concurrently: fanning out never holds two brokers' locks.
func TestHubConcurrentPublish(t *testing.T) {
	h := NewHub()
	var bs []*Broker
	var subs []*Subscriber
	for range 4 {
		b := NewBroker()
		h.Join(b, func() uint64 { return 0 })
		s := NewSubscriber(1<<30, func() {})
		b.Add(Channel, "c", s, b.Marks(0))
		bs, subs = append(bs, b), append(subs, s)
	}
	var wg sync.WaitGroup
	for _, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= 2000; i++ {
				b.Publish(i, []byte("c"), []byte("m"), false)
			}
		}()
	}
	wg.Wait()
	for i, s := range subs {
		if n := len(s.Take(true)); n != 4*2000 {
			t.Errorf("subscriber %d got %d messages; want every group's 2000, 8000", i, n)
		}
	}
}
