package pubsub

import (
	"bytes"
	"testing"
)

func TestBrokerDelivery(t *testing.T) {
	b := NewBroker()
	killed := 0
	s1 := NewSubscriber(1<<20, func() { killed++ })
	s2 := NewSubscriber(1<<20, func() { killed++ })
	s2.RESP3.Store(true)
	b.Add(Channel, "news", s1, b.Marks(0))
	b.Add(Pattern, "n*", s1, b.Marks(0))
	b.Add(Channel, "news", s2, b.Marks(10))
	b.Add(Shard, "news", s2, b.Marks(0))

	if n := b.Publish(5, []byte("news"), []byte("hi"), false); n != 2 {
		t.Fatalf("publish at 5 reached %d, want 2 (s2 subscribed at 10)", n)
	}
	if n := b.Publish(11, []byte("news"), []byte("x"), false); n != 3 {
		t.Fatalf("publish at 11 reached %d, want 3", n)
	}
	if n := b.Publish(12, []byte("news"), []byte("s"), true); n != 1 {
		t.Fatalf("spublish reached %d, want 1", n)
	}
	got := bytes.Join(s1.Take(true), nil)
	want := "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n" +
		"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n" +
		"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nx\r\n" +
		"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\nx\r\n"
	if string(got) != want {
		t.Fatalf("s1 got %q\nwant %q", got, want)
	}
	got = bytes.Join(s2.Take(true), nil)
	want = ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nx\r\n>3\r\n$8\r\nsmessage\r\n$4\r\nnews\r\n$1\r\ns\r\n"
	if string(got) != want {
		t.Fatalf("s2 got %q\nwant %q", got, want)
	}

	if ch := b.Names(Channel, nil); len(ch) != 1 || ch[0] != "news" {
		t.Fatalf("channels %q", ch)
	}
	if ch := b.Names(Channel, []byte("x*")); len(ch) != 0 {
		t.Fatalf("channels x* %q", ch)
	}
	if b.Count(Channel, "news") != 2 || b.NumPat() != 1 || b.Count(Shard, "news") != 1 {
		t.Fatal("counts")
	}
	b.RemoveAll(s1)
	b.Remove(Channel, "news", s2)
	b.Remove(Shard, "news", s2)
	if b.Count(Channel, "news") != 0 || b.NumPat() != 0 || len(b.Names(Shard, nil)) != 0 {
		t.Fatal("not removed")
	}
	if killed != 0 {
		t.Fatal("killed")
	}
}

func TestSlowSubscriberIsDisconnected(t *testing.T) {
	b := NewBroker()
	killed := 0
	s := NewSubscriber(100, func() { killed++ })
	b.Add(Channel, "c", s, b.Marks(0))
	msg := bytes.Repeat([]byte("x"), 40)
	if b.Publish(1, []byte("c"), msg, false) != 1 {
		t.Fatal("first message not queued")
	}
	if b.Publish(2, []byte("c"), msg, false) != 0 || killed != 1 {
		t.Fatalf("over the limit: killed %d", killed)
	}
	if b.Publish(3, []byte("c"), []byte("y"), false) != 0 || killed != 1 {
		t.Fatal("a closed subscriber took a message")
	}
	s.Close()
	s.Close() // idempotent
}
