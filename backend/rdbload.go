package backend

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// ErrBadRDB is wrapped by the errors of CheckRDB and LoadRDB for a stream that
// is not a complete, intact RDB file.
var ErrBadRDB = errors.New("not a valid RDB file")

const (
	rdbHeaderLen = 9 // "REDIS" and a 4-digit version
	rdbFooterLen = 8 // CRC-64, little-endian
	rdbOpcodeEOF = 0xFF
	// The smallest RDB is a header, the EOF opcode and the footer.
	rdbMinLen = rdbHeaderLen + 1 + rdbFooterLen

	// Big enough that hash/crc64 amortises the slicing-by-8 table it builds
	// per call for a non-standard polynomial, small enough to stay cheap.
	rdbChunk = 256 << 10

	// restoreTimeout bounds the REPLICAOF NO ONE sent after a failure: the
	// caller's ctx may be over, and a redis busy loading answers -LOADING
	// until it is done, so it is retried for this long.
	restoreTimeout = 5 * time.Second
	// diagnoseTimeout bounds the look for redis's reason after a failure.
	diagnoseTimeout = 2 * time.Second
)

// rdbCRCTable is redis's CRC-64 (crc64.c, "Jones" polynomial) in the reflected
// form hash/crc64 expects.
var rdbCRCTable = crc64.MakeTable(0x95AC9329AC4BC9B5)

// rdbCRC continues redis's CRC-64 over p. Redis starts from 0 and applies no
// final xor, while hash/crc64 inverts the value on entry and on exit, so the
// inversions are undone around it.
func rdbCRC(crc uint64, p []byte) uint64 {
	return ^crc64.Update(^crc, rdbCRCTable, p)
}

func checkRDBHeader(h []byte) error {
	if len(h) < rdbHeaderLen || string(h[:5]) != "REDIS" {
		return fmt.Errorf("%w: it does not start with REDIS", ErrBadRDB)
	}
	for _, c := range h[5:rdbHeaderLen] {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: bad version %q after REDIS", ErrBadRDB, h[5:rdbHeaderLen])
		}
	}
	return nil
}

// checkRDBFooter checks the last bytes of an RDB: the EOF opcode, then the
// CRC-64 of everything before the footer (crc). An all-zero footer is what
// redis writes with rdbchecksum no; redis accepts it, so this does too.
func checkRDBFooter(last byte, crc uint64, footer []byte) error {
	if last != rdbOpcodeEOF {
		return fmt.Errorf("%w: no EOF opcode before the checksum (truncated?)", ErrBadRDB)
	}
	want := binary.LittleEndian.Uint64(footer)
	if want != 0 && want != crc {
		return fmt.Errorf("%w: checksum mismatch (footer %016x, content %016x): truncated or corrupt", ErrBadRDB, want, crc)
	}
	return nil
}

// CheckRDB reads r to its end and verifies that it is a whole RDB file: the
// REDIS magic and version, the EOF opcode and the CRC-64 footer. It returns
// the number of bytes read. Memory use is a fixed buffer, whatever the size.
func CheckRDB(r io.Reader) (size int64, err error) {
	// buf[:held] has been read but not checksummed yet: until the stream
	// ends, its last 9 bytes may be the EOF opcode and the footer.
	const keep = 1 + rdbFooterLen
	buf := make([]byte, keep+rdbChunk)
	held, err := io.ReadFull(r, buf[:rdbHeaderLen])
	size = int64(held)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return size, fmt.Errorf("%w: only %d bytes", ErrBadRDB, size)
		}
		return size, fmt.Errorf("read RDB: %w", err)
	}
	if err := checkRDBHeader(buf[:rdbHeaderLen]); err != nil {
		return size, err
	}
	var crc uint64
	for {
		n, rerr := r.Read(buf[held:])
		size += int64(n)
		held += n
		if held > keep {
			crc = rdbCRC(crc, buf[:held-keep])
			held = copy(buf, buf[held-keep:held])
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return size, fmt.Errorf("read RDB: %w", rerr)
		}
	}
	if size < rdbMinLen {
		return size, fmt.Errorf("%w: only %d bytes", ErrBadRDB, size)
	}
	crc = rdbCRC(crc, buf[:1])
	return size, checkRDBFooter(buf[0], crc, buf[1:keep])
}

// LoadRDB replaces the whole content of the redis at redisAddr (host:port or
// unix socket path) with the RDB read from rdb (size bytes), without
// restarting redis and without a shared filesystem: it poses as a redis
// master on 127.0.0.1 for one full synchronization, so redis must run on this
// host. Redis flushes every database and loads the RDB's, then is made a
// master again with REPLICAOF NO ONE.
//
// The payload is streamed (never whole in memory) and checksummed on the
// way; its last 8 bytes, the CRC-64 footer, are held back until the rest has
// been verified. A corrupt payload is therefore never completed, and redis,
// which exits on a corrupt RDB from its master, drops the transfer and keeps
// its old data instead. That protects the default disk-based load only: with
// repl-diskless-load swapdb or on-empty-db redis parses the stream as it
// arrives, so callers should run CheckRDB on the file first.
//
// Every blocking step honours ctx. If ctx ends while a Read on rdb is
// blocked, LoadRDB returns without waiting for that Read; closing rdb
// releases it. On any failure LoadRDB still sends REPLICAOF NO ONE, with a
// fresh timeout, so redis is not left a replica of a master that is gone.
// Whether redis kept its old data then depends on how far it got: a transfer
// cut short keeps it, a failed load has already flushed it.
func LoadRDB(ctx context.Context, redisAddr string, rdb io.Reader, size int64) (err error) {
	return LoadRDBAuth(ctx, redisAddr, "", rdb, size)
}

// LoadRDBAuth is LoadRDB for a redis with requirepass password ("" for none).
func LoadRDBAuth(ctx context.Context, redisAddr, password string, rdb io.Reader, size int64) error {
	_, err := loadRDB(ctx, redisAddr, password, rdb, size, false)
	return err
}

// loadRDB is LoadRDBAuth; with keep, redis stays a replica once it has
// loaded the RDB and the link is returned as a stream (see Hold). A caller
// whose redis a Hibernation may stop holds it for the whole load: most of
// the load happens on the link, which the gate does not see.
func loadRDB(ctx context.Context, redisAddr, password string, rdb io.Reader, size int64, keep bool) (st *replLink, err error) {
	if size < rdbMinLen {
		return nil, fmt.Errorf("load rdb: %w: %d bytes is smaller than any RDB", ErrBadRDB, size)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load rdb: not started: %w", err)
	}
	// The header is read before redis is touched, so a source that is not an
	// RDB at all costs redis nothing.
	header := make([]byte, rdbHeaderLen)
	if err := readFullCtx(ctx, rdb, header); err != nil {
		return nil, stepErr(ctx, "read the RDB header", err)
	}
	if err := checkRDBHeader(header); err != nil {
		return nil, fmt.Errorf("load rdb: %w", err)
	}

	ctl, err := DialAuth(ctx, redisAddr, password)
	if err != nil {
		return nil, stepErr(ctx, "connect to redis", err)
	}
	defer ctl.Close()
	stop := context.AfterFunc(ctx, func() { ctl.SetDeadline(aLongTimeAgo) })
	defer stop()
	started := time.Now()

	// From here redis may be a replica of this function, whatever the reply
	// to REPLICAOF says: a lost reply does not mean the command did not run.
	replica := true
	port := 0
	defer func() {
		if !replica {
			return
		}
		if rerr := restoreMaster(ctx, redisAddr, password); rerr != nil {
			err = fmt.Errorf("%w; REPLICAOF NO ONE failed too, so redis may still be a replica of the gone 127.0.0.1:%d: %w", err, port, rerr)
		}
	}()
	nc, sync, port, err := attachReplica(ctx, ctl)
	if err != nil {
		return nil, stepErr(ctx, "attach redis as a replica", err)
	}
	if err := serveFullSync(ctx, nc, sync, header, rdb, size); err != nil {
		nc.Close()
		err = stepErr(ctx, "full sync", err)
		if ctx.Err() == nil && !errors.Is(err, ErrBadRDB) {
			err = fmt.Errorf("%w (%s)", err, redisReason(ctx, redisAddr, password, port, started))
		}
		return nil, err
	}

	// Once the payload is in, redis only sends REPLCONF ACKs; the stream
	// reads them, so its writes never block, and the end of the link tells
	// a failed load (redis drops it) from a slow one.
	st = newReplLink(nc, 0)
	if err := waitLoaded(ctx, ctl, port, st); err != nil {
		st.close()
		err = stepErr(ctx, "wait for redis to load the RDB", err)
		if ctx.Err() == nil {
			err = fmt.Errorf("%w (%s)", err, redisReason(ctx, redisAddr, password, port, started))
		}
		return nil, err
	}
	if keep {
		replica = false
		return st, nil
	}
	if _, err := ctl.DoValue("REPLICAOF", "NO", "ONE"); err != nil {
		st.close()
		return nil, stepErr(ctx, "make redis a master again", err)
	}
	replica = false
	st.close()
	return nil, nil
}

// aLongTimeAgo is a deadline that fails pending and future I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// stepErr names the failed step and, when ctx is why, says so first: the
// I/O error a deadline produces ("i/o timeout") is only the symptom.
func stepErr(ctx context.Context, step string, err error) error {
	if cerr := context.Cause(ctx); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("load rdb: %s: %w: %w", step, cerr, err)
	}
	return fmt.Errorf("load rdb: %s: %w", step, err)
}

// readFullCtx is io.ReadFull that gives up when ctx ends. A Read cannot be
// interrupted, so an abandoned one finishes in the background into buf, which
// the caller must then drop.
func readFullCtx(ctx context.Context, r io.Reader, buf []byte) error {
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(r, buf)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// serveFullSync plays the master's side of the replication handshake on nc
// and sends the RDB: header (already read from rdb) followed by the rest of
// rdb, size bytes in all.
func serveFullSync(ctx context.Context, nc net.Conn, sync [][]byte, header []byte, rdb io.Reader, size int64) error {
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	defer stop()
	psync := strings.EqualFold(string(sync[0]), "psync")
	// The length-prefixed form, not the EOF-marker one the replica also
	// accepts (capa eof): the size is known, and redis then knows when the
	// transfer is complete without scanning for a marker.
	var head []byte
	if psync {
		id := make([]byte, 20)
		rand.Read(id)
		head = fmt.Appendf(head, "+FULLRESYNC %s 0\r\n", hex.EncodeToString(id))
	}
	// A SYNC (pre-PSYNC) replica gets the bulk alone, as from redis itself.
	head = fmt.Appendf(head, "$%d\r\n", size)
	head = append(head, header...)
	if _, err := nc.Write(head); err != nil {
		return fmt.Errorf("send the sync header: %w", err)
	}

	// The copy runs apart so that a Read on rdb that never returns does not
	// hold up the return when ctx ends.
	done := make(chan error, 1)
	var sent int64
	go func() {
		var err error
		sent, err = sendPayload(nc, header, rdb, size)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("send the RDB payload (%d of %d bytes sent): %w", sent, size, err)
		}
		return nil
	case <-ctx.Done():
		nc.SetDeadline(aLongTimeAgo)
		return fmt.Errorf("send the RDB payload: %w", context.Cause(ctx))
	}
}

// replicaHandshake answers the replica's commands up to its PSYNC or SYNC and
// returns that command. What redis sends depends on its version and
// configuration (AUTH with masterauth, REPLCONF ip-address with
// replica-announce-ip, ...); acknowledging all of it is all a master needs
// to do before a sync.
func replicaHandshake(nc net.Conn) ([][]byte, error) {
	r := resp.NewReader(nc, 4096)
	var out []byte
	for {
		args, err := r.ReadCommand()
		if err != nil {
			return nil, err
		}
		out = out[:0]
		switch cmd := strings.ToUpper(string(args[0])); cmd {
		case "PSYNC", "SYNC":
			cp := make([][]byte, len(args))
			for i, a := range args {
				cp[i] = bytes.Clone(a)
			}
			return cp, nil
		case "PING":
			out = resp.AppendSimple(out, "PONG")
		case "AUTH", "REPLCONF":
			out = resp.AppendSimple(out, "OK")
		default:
			out = resp.AppendError(out, fmt.Sprintf("ERR unknown command '%s'", args[0]))
		}
		if _, err := nc.Write(out); err != nil {
			return nil, err
		}
	}
}

// sendPayload sends the rest of the RDB after header. Its CRC-64 is computed
// on the way and the footer sent only if it matches, so that redis never
// receives a complete corrupt RDB.
func sendPayload(w io.Writer, header []byte, rdb io.Reader, size int64) (sent int64, err error) {
	sent = int64(len(header))
	crc := rdbCRC(0, header)
	last := header[len(header)-1]
	buf := make([]byte, rdbChunk)
	for body := size - rdbFooterLen; sent < body; {
		n, rerr := rdb.Read(buf[:min(int64(len(buf)), body-sent)])
		if n > 0 {
			crc = rdbCRC(crc, buf[:n])
			last = buf[n-1]
			if _, err := w.Write(buf[:n]); err != nil {
				return sent, err
			}
			sent += int64(n)
		}
		if rerr == io.EOF && sent < body {
			return sent, fmt.Errorf("%w: the source ended after %d of %d bytes", ErrBadRDB, sent, size)
		}
		if rerr != nil && rerr != io.EOF {
			return sent, fmt.Errorf("read the RDB: %w", rerr)
		}
	}
	footer := buf[:rdbFooterLen]
	if _, err := io.ReadFull(rdb, footer); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: the source ended in the checksum footer", ErrBadRDB)
		}
		return sent, err
	}
	if err := checkRDBFooter(last, crc, footer); err != nil {
		return sent, err
	}
	if _, err := w.Write(footer); err != nil {
		return sent, err
	}
	return size, nil
}

// waitLoaded polls redis until it is linked to this master, which it is only
// once it has loaded the payload. It fails fast when redis drops the
// replication connection (a failed load) or another client moves redis to
// another master.
func waitLoaded(ctx context.Context, ctl *Conn, port int, st *replLink) error {
	delay := 2 * time.Millisecond
	for {
		v, err := ctl.DoValue("INFO", "replication")
		if err != nil {
			return err
		}
		if role := InfoField(v.Str, "role"); role != "slave" {
			return fmt.Errorf("redis is no longer a replica (role:%s): another client changed its replication", role)
		}
		if host, p := InfoField(v.Str, "master_host"), InfoField(v.Str, "master_port"); host != "127.0.0.1" || p != strconv.Itoa(port) {
			return fmt.Errorf("redis now replicates %s:%s: another client changed its replication", host, p)
		}
		if InfoField(v.Str, "master_link_status") == "up" {
			v, err := ctl.DoValue("INFO", "persistence")
			if err != nil {
				return err
			}
			if InfoField(v.Str, "loading") == "0" {
				return nil
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-st.done:
			t.Stop()
			return fmt.Errorf("redis closed the replication connection before it was up: %w", st.err)
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
		// INFO is cheap, even while redis loads (it answers between
		// chunks), and every step of delay adds to the load time.
		delay = min(2*delay, 25*time.Millisecond)
	}
}

// restoreMaster sends REPLICAOF NO ONE on a fresh connection (the one that
// failed may be mid-reply) with a fresh timeout (ctx may be over).
func restoreMaster(ctx context.Context, addr, password string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	c, err := DialAuth(ctx, addr, password)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	for {
		v, err := c.DoValue("REPLICAOF", "NO", "ONE")
		if err == nil {
			return nil
		}
		// A redis loading the payload refuses every command but a few
		// (INFO...) until it is done; then REPLICAOF NO ONE keeps what it
		// loaded.
		if !v.IsError() || !bytes.HasPrefix(v.Str, []byte("LOADING")) {
			return err
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

// redisReason looks for why redis dropped the sync. Redis tells a master
// nothing (it closes the connection) and INFO has no trace of it; only its
// log says, so when the log file is readable from here the warnings redis
// wrote since the sync started are returned. Otherwise a hint about the usual
// cause.
func redisReason(ctx context.Context, addr, password string, port int, since time.Time) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), diagnoseTimeout)
	defer cancel()
	hint := "redis gives its reason only in its log; with repl-diskless-load disabled (the default) it first writes the payload to a temp file in its dir, which must be writable and have room"
	c, err := DialAuth(ctx, addr, password)
	if err != nil {
		return hint
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if v, err := c.DoValue("INFO", "replication"); err == nil {
		role, p := InfoField(v.Str, "role"), InfoField(v.Str, "master_port")
		if role != "slave" || p != strconv.Itoa(port) {
			return fmt.Sprintf("another client changed redis's replication: role:%s master_port:%s", role, p)
		}
	}
	config := func(name string) string {
		v, err := c.DoValue("CONFIG", "GET", name)
		if err != nil || len(v.Elems) != 2 {
			return ""
		}
		return v.Elems[1].String()
	}
	dir, logfile := config("dir"), config("logfile")
	if dir != "" {
		hint += fmt.Sprintf("; its dir is %q", dir)
	}
	info, err := c.DoValue("INFO", "server")
	if err != nil || logfile == "" {
		return hint
	}
	if !filepath.IsAbs(logfile) {
		// Redis reopens its log for every line, relative to its working
		// directory, which is its dir.
		logfile = filepath.Join(dir, logfile)
	}
	warnings := logWarnings(logfile, InfoField(info.Str, "process_id"), since)
	if len(warnings) == 0 {
		return hint
	}
	return "redis logged: " + strings.Join(warnings, "; ")
}

// logWarnings returns the last few warnings (level '#') about the sync that
// process pid wrote to the redis log at path since the given time. Matching
// the pid keeps a log at the same path on this host, when redis runs
// elsewhere, from being quoted.
func logWarnings(path, pid string, since time.Time) []string {
	if pid == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const tail = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		f.Seek(st.Size()-tail, io.SeekStart)
	}
	// Redis stamps its lines to the millisecond, truncated.
	since = since.Truncate(time.Millisecond)
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, tail))
	for sc.Scan() {
		// "pid:role dd Mon yyyy hh:mm:ss.mmm # message"
		fields := strings.SplitN(sc.Text(), " ", 7)
		if len(fields) != 7 || fields[5] != "#" || !strings.HasPrefix(fields[0], pid+":") || !aboutSync(fields[6]) {
			continue
		}
		t, err := time.ParseInLocation("2 Jan 2006 15:04:05.000", strings.Join(fields[1:5], " "), time.Local)
		if err != nil || t.Before(since) {
			continue
		}
		out = append(out, fields[6])
	}
	if len(out) > 3 {
		out = out[len(out)-3:]
	}
	return out
}

// aboutSync tells the warnings of a failed sync ("Opening the temp file
// needed for MASTER <-> REPLICA synchronization: ...", "Wrong RDB checksum
// ...", "Failed trying to load the MASTER synchronization DB from disk")
// from those of any replication change ("Setting secondary replication ID").
func aboutSync(msg string) bool {
	for _, s := range []string{"MASTER", "DB", "sync", "temp file", "disk"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
