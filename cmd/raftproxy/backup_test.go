package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// emptyRDB is the smallest RDB redis loads: header, EOF opcode and an
// all-zero checksum (what redis writes with rdbchecksum no).
var emptyRDB = []byte("REDIS0011\xff\x00\x00\x00\x00\x00\x00\x00\x00")

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// backupReply is RAFT.BACKUP's reply carrying body, announcing size bytes
// with checksum sum.
func backupReply(sum string, size int, body []byte) string {
	return fmt.Sprintf("*5\r\n:42\r\n:7\r\n$%d\r\n%s\r\n$4\r\nabcd\r\n$%d\r\n%s\r\n", len(sum), sum, size, body)
}

func TestReceiveBackup(t *testing.T) {
	badCRC := append(append([]byte{}, emptyRDB[:10]...), 1, 2, 3, 4, 5, 6, 7, 8)
	notRDB := []byte("hello, this is no rdb")
	for _, tc := range []struct {
		name  string
		reply string
		want  string // "" for success, else a part of the error
	}{
		{"ok", backupReply(sha(emptyRDB), len(emptyRDB), emptyRDB), ""},
		{"error reply", "-NOCLUSTER No Raft Cluster\r\n", "NOCLUSTER No Raft Cluster"},
		{"not an array of 5", "*3\r\n:1\r\n:2\r\n:3\r\n", "want an array of 5"},
		{"sha256 mismatch", backupReply(sha([]byte("other")), len(emptyRDB), emptyRDB), "sha256"},
		{"cut short", strings.TrimSuffix(backupReply(sha(emptyRDB), len(emptyRDB)+5, emptyRDB), "\r\n"), "ended after 18 of 23 bytes"},
		{"cut in the head", backupReply(sha(emptyRDB), len(emptyRDB), emptyRDB)[:60], "read the reply: unexpected EOF"},
		{"no CRLF after the RDB", strings.TrimSuffix(backupReply(sha(emptyRDB), len(emptyRDB), emptyRDB), "\r\n") + "xx", "not followed by CRLF"},
		{"bad checksum", backupReply(sha(badCRC), len(badCRC), badCRC), "checksum mismatch"},
		{"not an RDB", backupReply(sha(notRDB), len(notRDB), notRDB), "does not start with REDIS"},
		{"index not an integer", "*5\r\n$2\r\n42\r\n", "unexpected reply element"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "b.rdb")
			if err := os.WriteFile(out, []byte("previous backup"), 0o600); err != nil {
				t.Fatal(err)
			}
			info, err := receiveBackup(bufio.NewReader(strings.NewReader(tc.reply)), out, nil)
			got, rerr := os.ReadFile(out)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("receiveBackup: %v", err)
				}
				if !bytes.Equal(got, emptyRDB) || info.Index != 42 || info.Term != 7 || info.ClusterID != "abcd" || info.Size != int64(len(emptyRDB)) || info.SHA256 != sha(emptyRDB) {
					t.Errorf("wrote %q with info %+v", got, info)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want one saying %q", err, tc.want)
				}
				if string(got) != "previous backup" {
					t.Errorf("a failed backup replaced %s with %q", out, got)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("files left in %s: %v", dir, ents)
			}
		})
	}
}

func TestWriteSidecar(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.rdb.json")
	info := backupInfo{Index: 9, Term: 2, Size: 18, SHA256: sha(emptyRDB), ClusterID: "abcd", From: "127.0.0.1:7001", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	for range 2 { // the second write replaces the first
		if err := writeSidecar(path, info); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got backupInfo
	if err := json.Unmarshal(b, &got); err != nil || got != info {
		t.Errorf("sidecar holds %s (%v), want %+v", b, err, info)
	}
	for _, k := range []string{`"index": 9`, `"term": 2`, `"sha256"`, `"cluster_id": "abcd"`, `"time": "2026-01-02T03:04:05Z"`} {
		if !bytes.Contains(b, []byte(k)) {
			t.Errorf("sidecar lacks %s:\n%s", k, b)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files left in %s: %v", dir, ents)
	}
}

func TestCheckSeedRDB(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"valid", write("ok.rdb", emptyRDB), ""},
		{"missing", filepath.Join(dir, "nope.rdb"), "no such file"},
		{"empty", write("empty.rdb", nil), "only 0 bytes"},
		{"aof, not rdb", write("appendonly.aof", []byte("*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n")), "does not start with REDIS"},
		{"truncated", write("cut.rdb", emptyRDB[:12]), "only 12 bytes"},
		{"bad version", write("v.rdb", []byte("REDISxx11\xff\x00\x00\x00\x00\x00\x00\x00\x00")), "bad version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSeedRDB(tc.path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("checkSeedRDB: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--seed-rdb") {
				t.Errorf("error %v, want one naming --seed-rdb and saying %q", err, tc.want)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	for _, tc := range []struct {
		name, reply, want string
	}{
		{"accepted", "+OK\r\n", ""},
		{"no password configured", "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n", ""},
		{"wrong password", "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH refused: WRONGPASS"},
		{"garbage", ":1\r\n", "unexpected AUTH reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent bytes.Buffer
			err := authenticate(&sent, bufio.NewReader(strings.NewReader(tc.reply)), "s3cret")
			if sent.String() != "*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n" {
				t.Errorf("sent %q", sent.String())
			}
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseBackupFlags(t *testing.T) {
	t.Setenv("RAFTPROXY_PASSWORD", "from-env")
	o, err := parseBackupFlags([]string{"--from", "h:1", "--out", "b.rdb"})
	if err != nil || o.password != "from-env" || o.from != "h:1" || o.out != "b.rdb" {
		t.Errorf("got %+v, %v", o, err)
	}
	if o, err := parseBackupFlags([]string{"--from", "h:1", "--out", "b.rdb", "--password", "flag"}); err != nil || o.password != "flag" {
		t.Errorf("--password does not win over the environment: %+v, %v", o, err)
	}
	if o, err := parseBackupFlags([]string{"--from", "h:1", "--out", "b.rdb", "--tls-ca", "ca.pem"}); err != nil || !o.tls || o.tlsCA != "ca.pem" {
		t.Errorf("--tls-ca does not imply --tls: %+v, %v", o, err)
	}
	for _, args := range [][]string{{"--out", "b.rdb"}, {"--from", "h:1"}, {"--from", "h:1", "--out", "b.rdb", "extra"},
		{"--from", "h:1", "--out", "b.rdb", "--tls-cert", "c.pem"}} {
		if _, err := parseBackupFlags(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// TestBackupProgress: on a terminal the transfer's progress is shown, and
// ends at 100%.
func TestBackupProgress(t *testing.T) {
	var progress strings.Builder
	out := filepath.Join(t.TempDir(), "b.rdb")
	if _, err := receiveBackup(bufio.NewReader(strings.NewReader(backupReply(sha(emptyRDB), len(emptyRDB), emptyRDB))), out, &progress); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(progress.String(), "\rreceived ") || !strings.HasSuffix(progress.String(), "(100%)\n") {
		t.Errorf("progress: %q", progress.String())
	}
}

// TestBackupIdleTimeout: --timeout bounds a stall, not the transfer: a
// server that sends a byte every 100 ms for a second is read whole with a
// 400 ms timeout, one that stops sending fails after it.
func TestBackupIdleTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for range 10 {
					time.Sleep(100 * time.Millisecond)
					c.Write([]byte("x"))
				}
				time.Sleep(2 * time.Second) // then stalls
			}()
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := &idleConn{Conn: raw, idle: 400 * time.Millisecond}
	start := time.Now()
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("a slow but steady transfer failed after %v: %v", time.Since(start), err)
	}
	if _, err := c.Read(buf); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stalled transfer: %v, want a deadline error", err)
	}
}
