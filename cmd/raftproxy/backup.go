package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/internal/fsutil"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/tlsfiles"
)

const backupUsage = `raftproxy backup: copy a consistent snapshot of a running cluster to a file.

Usage:
  raftproxy backup --from HOST:PORT --out FILE.rdb [--password PASSWORD] [--timeout 10m]
                   [--tls] [--tls-ca CA.pem] [--tls-cert CERT.pem --tls-key KEY.pem]

The node at --from (any member, leader or follower) makes sure the snapshot
holds every write committed before the backup started (RAFT.BACKUP), and the
RDB is streamed to FILE.rdb: a plain redis RDB file that raftproxy
--seed-rdb and a stock redis-server both load. FILE.rdb.json records the
raft index and term it reflects, its size, sha256 and the cluster id; the
same JSON is printed on stdout. Both files are written atomically. On a
terminal, the transfer's progress is shown on stderr. --timeout bounds how
long the backup may go without progress (the node making its snapshot,
then each read of the transfer), not the whole transfer.

Flags:
`

// backupInfo describes a backup; it is FILE.rdb.json and the tool's output.
type backupInfo struct {
	Index     uint64    `json:"index"`
	Term      uint64    `json:"term"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	ClusterID string    `json:"cluster_id"`
	From      string    `json:"from"`
	Time      time.Time `json:"time"`
}

type backupOptions struct {
	from, out, password string
	timeout             time.Duration
	// TLS to a node whose client port speaks it (--tls-cert on the node).
	tls                             bool
	tlsCA, tlsCert, tlsKey, tlsName string
}

func parseBackupFlags(args []string) (backupOptions, error) {
	var o backupOptions
	fs := flag.NewFlagSet("raftproxy backup", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), backupUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.from, "from", "", "client (RESP) address of any member, HOST:PORT (required)")
	fs.StringVar(&o.out, "out", "", "the RDB file to write; FILE.json gets its description (required)")
	// The environment is read after parsing, not as the flag's default,
	// which --help would print.
	fs.StringVar(&o.password, "password", "", "sent with AUTH first, if set (default: $RAFTPROXY_PASSWORD)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long the backup may go without progress: the node making its snapshot, or the transfer stalled")
	fs.BoolVar(&o.tls, "tls", false, "connect with TLS (implied by the other --tls-* flags)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA bundle verifying the node's certificate (default: system roots)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM client certificate, for a node with --tls-client-auth require")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&o.tlsName, "tls-server-name", "", "name the node's certificate must hold (default: the host of --from)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.tls = o.tls || o.tlsCA != "" || o.tlsCert != "" || o.tlsKey != "" || o.tlsName != ""
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, errors.New("--tls-cert and --tls-key go together")
	}
	if o.password == "" {
		o.password = os.Getenv("RAFTPROXY_PASSWORD")
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.from == "" || o.out == "" {
		return o, errors.New("--from and --out are required (see raftproxy backup --help)")
	}
	return o, nil
}

// backupMain runs `raftproxy backup` and returns the exit status.
func backupMain(args []string) int {
	o, err := parseBackupFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftproxy backup:", err)
		return 2
	}
	var progress io.Writer
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		progress = os.Stderr
	}
	info, err := backup(context.Background(), o, progress)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftproxy backup:", err)
		return 1
	}
	b, _ := json.Marshal(info)
	fmt.Println(string(b))
	return 0
}

// backup copies a snapshot from o.from to o.out; progress, when not nil,
// gets the transfer's progress.
func backup(ctx context.Context, o backupOptions, progress io.Writer) (backupInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout) // for connecting
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", o.from)
	if err != nil {
		return backupInfo{}, fmt.Errorf("connect to %s: %w", o.from, err)
	}
	defer raw.Close()
	var nc net.Conn = &idleConn{Conn: raw, idle: o.timeout}
	if o.tls {
		files, err := tlsfiles.Load(o.tlsCert, o.tlsKey, o.tlsCA)
		if err != nil {
			return backupInfo{}, fmt.Errorf("TLS: %w", err)
		}
		cfg := files.ClientConfigFor(o.from)
		if o.tlsName != "" {
			cfg = files.ClientConfig(o.tlsName)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return backupInfo{}, fmt.Errorf("TLS handshake with %s: %w", o.from, err)
		}
		nc = tc
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	if o.password != "" {
		if err := authenticate(nc, br, o.password); err != nil {
			return backupInfo{}, fmt.Errorf("%s: %w", o.from, err)
		}
	}
	if _, err := nc.Write(resp.AppendCommandStrings(nil, "RAFT.BACKUP")); err != nil {
		return backupInfo{}, fmt.Errorf("send RAFT.BACKUP to %s: %w", o.from, err)
	}
	info, err := receiveBackup(br, o.out, progress)
	if err != nil {
		return info, fmt.Errorf("RAFT.BACKUP from %s: %w", o.from, err)
	}
	info.From, info.Time = o.from, time.Now().UTC()
	if err := writeSidecar(o.out+".json", info); err != nil {
		return info, err
	}
	return info, nil
}

// authenticate sends AUTH. A server without a password answers that none
// is configured; as redis-cli -a does, the backup goes on then.
func authenticate(w io.Writer, br *bufio.Reader, password string) error {
	if _, err := w.Write(resp.AppendCommandStrings(nil, "AUTH", password)); err != nil {
		return fmt.Errorf("send AUTH: %w", err)
	}
	line, err := readLine(br)
	if err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	switch {
	case line == "+OK":
		return nil
	case strings.HasPrefix(line, "-") && strings.Contains(line, "without any password configured"):
		fmt.Fprintln(os.Stderr, "raftproxy backup: warning: the server has no password; AUTH ignored")
		return nil
	case strings.HasPrefix(line, "-"):
		return fmt.Errorf("AUTH refused: %s", line[1:])
	}
	return fmt.Errorf("unexpected AUTH reply %q", line)
}

func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read the reply: %w", err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		return "", fmt.Errorf("reply line %q does not end with CRLF", line)
	}
	return line[:len(line)-2], nil
}

// readElement reads one element line of RAFT.BACKUP's reply: kind is ':' or
// '$'; a bulk's length is returned and, unless stream is set, its body.
func readElement(br *bufio.Reader, kind byte, stream bool) (int64, string, error) {
	line, err := readLine(br)
	if err != nil {
		return 0, "", err
	}
	if line == "" || line[0] != kind {
		return 0, "", fmt.Errorf("unexpected reply element %q (want %q)", truncate(line), kind)
	}
	n, err := strconv.ParseInt(line[1:], 10, 64)
	if err != nil || n < 0 {
		return 0, "", fmt.Errorf("bad reply element %q", truncate(line))
	}
	if kind != '$' || stream {
		return n, "", nil
	}
	if n > 1024 {
		return 0, "", fmt.Errorf("reply element of %d bytes where a short string was expected", n)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(br, buf); err != nil {
		return 0, "", fmt.Errorf("read the reply: %w", err)
	}
	if string(buf[n:]) != "\r\n" {
		return 0, "", errors.New("bulk string not followed by CRLF")
	}
	return n, string(buf[:n]), nil
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// receiveBackup reads RAFT.BACKUP's reply, [index, term, sha256, cluster
// id, RDB], and writes the RDB to out atomically: it streams into a
// temporary file beside out, checks the size, the sha256 the node stored
// with its snapshot and the RDB's own structure (header, CRC-64), fsyncs,
// and only then renames it to out. A failed backup leaves out untouched.
func receiveBackup(br *bufio.Reader, out string, progress io.Writer) (backupInfo, error) {
	var info backupInfo
	line, err := readLine(br)
	if err != nil {
		return info, err
	}
	if strings.HasPrefix(line, "-") {
		return info, errors.New(line[1:])
	}
	if line != "*5" {
		return info, fmt.Errorf("unexpected reply %q (want an array of 5)", truncate(line))
	}
	idx, _, err := readElement(br, ':', false)
	if err != nil {
		return info, err
	}
	term, _, err := readElement(br, ':', false)
	if err != nil {
		return info, err
	}
	if _, info.SHA256, err = readElement(br, '$', false); err != nil {
		return info, err
	}
	if _, info.ClusterID, err = readElement(br, '$', false); err != nil {
		return info, err
	}
	size, _, err := readElement(br, '$', true)
	if err != nil {
		return info, err
	}
	info.Index, info.Term, info.Size = uint64(idx), uint64(term), size

	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".tmp*")
	if err != nil {
		return info, fmt.Errorf("create a temporary file for %s: %w", out, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	// The RDB check reads the same bytes through a pipe as they arrive, so
	// the file is read once.
	pr, pw := io.Pipe()
	checked := make(chan error, 1)
	go func() {
		_, err := backend.CheckRDB(pr)
		// Closing with the error fails the copy's next write to the pipe,
		// so a bad RDB ends the transfer rather than stalling it.
		pr.CloseWithError(err)
		checked <- err
	}()
	h := sha256.New()
	var sink io.Writer = io.MultiWriter(tmp, h, pw)
	if progress != nil {
		p := &progressWriter{out: progress, total: size}
		defer p.done()
		sink = io.MultiWriter(sink, p)
	}
	n, err := io.Copy(sink, io.LimitReader(br, size))
	pw.CloseWithError(err) // nil: EOF
	rdbErr := <-checked
	switch {
	case err != nil && rdbErr != nil && errors.Is(err, rdbErr):
		return info, fmt.Errorf("the RDB received is not valid: %w", rdbErr)
	case err != nil:
		return info, fmt.Errorf("receive the RDB: %w", err)
	case n != size:
		return info, fmt.Errorf("the RDB ended after %d of %d bytes", n, size)
	}
	var crlf [2]byte
	if _, err := io.ReadFull(br, crlf[:]); err != nil || string(crlf[:]) != "\r\n" {
		return info, errors.New("the RDB bulk string is not followed by CRLF")
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != info.SHA256 {
		return info, fmt.Errorf("the RDB received has sha256 %s, the node's snapshot has %s", sum, info.SHA256)
	}
	if rdbErr != nil {
		return info, fmt.Errorf("the RDB received is not valid: %w", rdbErr)
	}
	if err := tmp.Sync(); err != nil {
		return info, fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return info, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return info, fmt.Errorf("rename the backup to %s: %w", out, err)
	}
	return info, fsutil.Sync(filepath.Dir(out))
}

// writeSidecar writes info as JSON to path atomically.
func writeSidecar(path string, info backupInfo) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("create a temporary file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return fsutil.Sync(filepath.Dir(path))
}

// checkSeedRDB verifies at start that the --seed-rdb file is a whole RDB
// (REDIS header, EOF opcode, CRC-64), so that a wrong path or file fails
// at once rather than at RAFT.CLUSTER INIT.
func checkSeedRDB(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--seed-rdb: %w", err)
	}
	defer f.Close()
	if _, err := backend.CheckRDB(f); err != nil {
		return fmt.Errorf("--seed-rdb %s: %w", path, err)
	}
	return nil
}

// idleConn is a connection whose every read and write must make progress
// within idle: a stalled transfer fails, a long one that moves does not.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}

// progressWriter shows how much of total has been written, at most twice a
// second, on one terminal line.
type progressWriter struct {
	out   io.Writer
	total int64
	n     int64
	last  time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if now := time.Now(); now.Sub(p.last) >= 500*time.Millisecond {
		p.last = now
		p.show()
	}
	return len(b), nil
}

func (p *progressWriter) show() {
	pct := 100.0
	if p.total > 0 {
		pct = float64(p.n) * 100 / float64(p.total)
	}
	fmt.Fprintf(p.out, "\rreceived %.1f of %.1f MiB (%.0f%%)", float64(p.n)/(1<<20), float64(p.total)/(1<<20), pct)
}

func (p *progressWriter) done() {
	p.show()
	fmt.Fprintln(p.out)
}
