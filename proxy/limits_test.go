package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestOutQueue(t *testing.T) {
	tests := []struct {
		name   string
		limit  int64
		writes []int // sizes written while the peer does not read
		read   bool  // the peer reads everything afterwards
		fail   bool  // a write must fail with errOutputLimit
	}{
		{"within the limit", 100, []int{40, 60}, true, false},
		{"one byte over", 100, []int{40, 61}, false, true},
		{"one write over", 10, []int{11}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			q := newOutQueue(server, tc.limit)
			var want []byte
			var err error
			for i, n := range tc.writes {
				p := bytes.Repeat([]byte{byte('a' + i)}, n)
				if _, err = q.Write(p); err != nil {
					break
				}
				want = append(want, p...)
			}
			if tc.fail {
				if !errors.Is(err, errOutputLimit) || !q.overflowed() {
					t.Fatalf("write error %v, overflowed %v; want the limit", err, q.overflowed())
				}
				// The socket is closed: the peer sees the end, not the data.
				client.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.ReadAll(client); err != nil {
					t.Fatalf("peer read: %v, want EOF", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			client.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("peer read %q %v, want %q", got, err, want)
			}
			q.drain(time.Second)
			if q.n != 0 {
				t.Errorf("%d bytes still queued after drain", q.n)
			}
		})
	}
}

// TestOutQueueWaitBelow: waitBelow returns once the peer has read enough,
// and with the error once the connection fails.
func TestOutQueueWaitBelow(t *testing.T) {
	client, server := net.Pipe()
	q := newOutQueue(server, 1<<20)
	if _, err := q.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- q.waitBelow(0) }()
	select {
	case err := <-done:
		t.Fatalf("waitBelow returned %v before the peer read anything", err)
	case <-time.After(50 * time.Millisecond):
	}
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(client, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waitBelow after the peer read: %v", err)
	}

	if _, err := q.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	client.Close() // the queued bytes can never be written
	if err := q.waitBelow(0); err == nil {
		t.Fatal("waitBelow on a closed connection returned no error")
	}
}
