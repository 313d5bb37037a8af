package migrate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/apply"
	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// ScanLimit is the most keys one listing returns: a mover moves them and
// lists again until a listing finds none, so a slot range of any size is
// listed in bounded memory and, through a member, in bounded calls.
const ScanLimit = 100_000

// ScanKeys lists the keys of the slots r in a shard's redis rc, in every
// database that has keys, ScanLimit at most. intact (see below) is asked,
// after the scan, whether that redis held all the shard's applied data
// throughout: a scan that found no key counts only then.
//
// The caller makes sure the steps logged before the scan were applied to
// rc's redis, so it sees every key the source held when they were logged;
// the source makes no new one in a moving slot.
//
// intact returns whether the redis whose run id (INFO server) the scan saw
// is the one the log was applied to, and that it was neither rebuilt nor
// reloaded meanwhile.
func ScanKeys(ctx context.Context, rc *backend.Conn, r slotmap.Range, intact func(runID string) bool) (out []apply.MovedKey, err error) {
	defer func() {
		if err != nil {
			return
		}
		v, ierr := rc.DoValue("INFO", "server")
		runID := ""
		for _, line := range strings.Split(string(v.Str), "\n") {
			if id, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
				runID = id
			}
		}
		if ierr != nil || !intact(runID) {
			out, err = nil, errors.New("scan: the shard's redis was rebuilt or replaced meanwhile")
		}
	}()
	info, err := rc.DoValue("INFO", "keyspace")
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	for _, line := range strings.Split(string(info.Str), "\n") {
		if len(out) >= ScanLimit {
			break
		}
		name, _, ok := strings.Cut(line, ":")
		db, err := strconv.Atoi(strings.TrimPrefix(name, "db"))
		if !ok || !strings.HasPrefix(name, "db") || err != nil {
			continue
		}
		cursor := "0"
		for {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rc.SetDeadline(time.Now().Add(stepTimeout))
			raw, err := rc.DoIn(db, []byte("SCAN"), []byte(cursor), []byte("COUNT"), []byte("1000"))
			if err != nil {
				return nil, fmt.Errorf("scan: %w", err)
			}
			v, _, err := resp.Parse(raw)
			if err != nil || v.Kind != '*' || len(v.Elems) != 2 {
				return nil, fmt.Errorf("scan answered %q", raw)
			}
			for _, k := range v.Elems[1].Elems {
				if s := slotmap.KeySlot(k.Str); r.First <= s && s <= r.Last {
					out = append(out, apply.MovedKey{DB: db, Key: append([]byte(nil), k.Str...)})
				}
			}
			cursor = string(v.Elems[0].Str)
			if cursor == "0" || len(out) >= ScanLimit {
				break
			}
		}
	}
	return out, nil
}
