package proxy

import (
	"bytes"
	"testing"
)

func TestBrokerDelivery(t *testing.T) {
	b := newBroker()
	killed := 0
	s1 := newSubscriber(1<<20, func() { killed++ })
	s2 := newSubscriber(1<<20, func() { killed++ })
	s2.resp3.Store(true)
	b.add(subChannel, "news", s1, 0)
	b.add(subPattern, "n*", s1, 0)
	b.add(subChannel, "news", s2, 10)
	b.add(subShard, "news", s2, 0)

	if n := b.publish(5, []byte("news"), []byte("hi"), false); n != 2 {
		t.Fatalf("publish at 5 reached %d, want 2 (s2 subscribed at 10)", n)
	}
	if n := b.publish(11, []byte("news"), []byte("x"), false); n != 3 {
		t.Fatalf("publish at 11 reached %d, want 3", n)
	}
	if n := b.publish(12, []byte("news"), []byte("s"), true); n != 1 {
		t.Fatalf("spublish reached %d, want 1", n)
	}
	got := bytes.Join(s1.take(true), nil)
	want := "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n" +
		"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n" +
		"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nx\r\n" +
		"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\nx\r\n"
	if string(got) != want {
		t.Fatalf("s1 got %q\nwant %q", got, want)
	}
	got = bytes.Join(s2.take(true), nil)
	want = ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nx\r\n>3\r\n$8\r\nsmessage\r\n$4\r\nnews\r\n$1\r\ns\r\n"
	if string(got) != want {
		t.Fatalf("s2 got %q\nwant %q", got, want)
	}

	if ch := b.names(subChannel, nil); len(ch) != 1 || ch[0] != "news" {
		t.Fatalf("channels %q", ch)
	}
	if ch := b.names(subChannel, []byte("x*")); len(ch) != 0 {
		t.Fatalf("channels x* %q", ch)
	}
	if b.count(subChannel, "news") != 2 || b.numpat() != 1 || b.count(subShard, "news") != 1 {
		t.Fatal("counts")
	}
	b.removeAll(s1)
	b.remove(subChannel, "news", s2)
	b.remove(subShard, "news", s2)
	if b.count(subChannel, "news") != 0 || b.numpat() != 0 || len(b.names(subShard, nil)) != 0 {
		t.Fatal("not removed")
	}
	if killed != 0 {
		t.Fatal("killed")
	}
}

func TestSlowSubscriberIsDisconnected(t *testing.T) {
	b := newBroker()
	killed := 0
	s := newSubscriber(100, func() { killed++ })
	b.add(subChannel, "c", s, 0)
	msg := bytes.Repeat([]byte("x"), 40)
	if b.publish(1, []byte("c"), msg, false) != 1 {
		t.Fatal("first message not queued")
	}
	if b.publish(2, []byte("c"), msg, false) != 0 || killed != 1 {
		t.Fatalf("over the limit: killed %d", killed)
	}
	if b.publish(3, []byte("c"), []byte("y"), false) != 0 || killed != 1 {
		t.Fatal("a closed subscriber took a message")
	}
	s.close()
	s.close() // idempotent
}
