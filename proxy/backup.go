package proxy

import (
	"bufio"
	"context"
	"io"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

// backupTimeout bounds the read barrier and the snapshot RAFT.BACKUP may
// have to make, as RAFT.DEBUG COMPACT's.
const backupTimeout = 10 * time.Minute

// raftBackup handles RAFT.BACKUP: a snapshot holding every write committed
// before the command arrived (raftnode.Node.Backup), replied as
// [index, term, sha256, cluster id, RDB], the RDB a bulk string streamed
// from the snapshot file by the writer, never held in memory. The RDB comes
// last so a client knows what to expect before it reads the bytes.
func (c *conn) raftBackup(args [][]byte) *op {
	if len(args) != 1 {
		return errReply("ERR wrong number of arguments for 'raft.backup' command")
	}
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return errReply(errNoCluster)
	}
	if n.Removed() {
		return errReply("ERR " + raftnode.ErrRemoved.Error())
	}
	ctx, cancel := context.WithTimeout(c.s.baseContext(), backupTimeout)
	defer cancel()
	m, f, err := n.Backup(ctx)
	if err != nil {
		return errReply(errorText(err, true))
	}
	b := resp.AppendArrayLen(nil, 5)
	b = resp.AppendInt(b, int64(m.Index))
	b = resp.AppendInt(b, int64(m.Term))
	b = resp.AppendBulkString(b, m.SHA256)
	b = resp.AppendBulkString(b, raftnode.IDString(n.ClusterID()))
	b = append(strconv.AppendInt(append(b, '$'), m.Size, 10), '\r', '\n')
	return &op{kind: opStream, reply: b, file: f, size: m.Size}
}

// writeStream writes an opStream reply: its head, then the file as one
// bulk string. It reports false when the file could not be read whole: the
// reply is then cut and the connection must close, since nothing else can
// follow a bulk string shorter than it said.
func (c *conn) writeStream(w *bufio.Writer, o *op) bool {
	defer o.file.Close()
	w.Write(o.reply)
	if c.out == nil {
		// The writer blocks on the socket: the client's reading paces it.
		if _, err := io.CopyN(w, o.file, o.size); err != nil {
			c.s.log.Error("RAFT.BACKUP: reading the snapshot file failed; closing the connection", "file", o.file.Name(), "err", err)
			return false
		}
	} else {
		// The output queue would take the whole file at disk speed and
		// pass the client's output limit: hand it over in chunks, each
		// when the client has read the one before.
		const chunk = 256 << 10
		for left := o.size; left > 0; {
			n := min(left, chunk)
			if _, err := io.CopyN(w, o.file, n); err != nil {
				c.s.log.Error("RAFT.BACKUP: reading the snapshot file failed; closing the connection", "file", o.file.Name(), "err", err)
				return false
			}
			left -= n
			if err := w.Flush(); err != nil {
				return false
			}
			if err := c.out.waitBelow(chunk); err != nil {
				return false
			}
		}
	}
	w.WriteString("\r\n")
	return true
}
