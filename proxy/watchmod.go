package proxy

import (
	"bytes"
	"strings"
)

// Modified reports whether a command whose reply was raw changed the keys
// it addresses (apply.Keys): redis marks a watched key only
// when a command changed it, and for these commands the reply tells that
// nothing changed. Anything else counts as a change. It depends on the
// command and its reply alone, so every node decides alike.
func (c *Commands) Modified(args [][]byte, raw []byte) bool {
	if len(raw) == 0 || len(args) == 0 {
		return true
	}
	var buf [32]byte
	name := string(lowerKey(args[0], buf[:0]))
	switch name {
	case "eval", "evalsha", "fcall", "eval_ro", "evalsha_ro", "fcall_ro":
		// A script may write and then fail; a killed one did not run.
		return !bytes.HasPrefix(raw, []byte("-ERR Script killed by user with"))
	}
	if raw[0] == '-' || raw[0] == '!' {
		return false // refused (WRONGTYPE, syntax...): nothing changed
	}
	switch {
	case string(raw) == ":0\r\n":
		_, ok := unchangedOnZero[name]
		return !ok
	case string(raw) == ":-1\r\n":
		return name != "linsert"
	case string(raw) == "$-1\r\n" || string(raw) == "_\r\n" || string(raw) == "*-1\r\n" || string(raw) == "*0\r\n":
		if _, ok := unchangedOnNil[name]; !ok {
			return true
		}
		if name == "set" {
			// SET ... GET answers the old value (nil when there was
			// none) whether or not it set the key.
			for _, a := range args[3:] {
				if strings.EqualFold(string(a), "get") {
					return true
				}
			}
		}
		return false
	}
	return true
}

// unchangedOnZero are the writes whose integer reply 0 means that they
// changed no key.
var unchangedOnZero = map[string]struct{}{
	"del": {}, "unlink": {}, "setnx": {}, "hsetnx": {}, "msetnx": {}, "hdel": {},
	"sadd": {}, "srem": {}, "smove": {}, "zrem": {}, "zremrangebyscore": {}, "zremrangebyrank": {},
	"zremrangebylex": {}, "lrem": {}, "linsert": {}, "expire": {}, "pexpire": {}, "expireat": {},
	"pexpireat": {}, "persist": {}, "renamenx": {}, "copy": {}, "move": {}, "pfadd": {},
}

// unchangedOnNil are the writes whose null (or empty) reply means that
// they changed no key.
var unchangedOnNil = map[string]struct{}{
	"set": {}, "getdel": {}, "getex": {}, "lpop": {}, "rpop": {}, "lmove": {}, "rpoplpush": {},
	"zpopmin": {}, "zpopmax": {}, "lmpop": {}, "zmpop": {},
	// A blocking command's attempt that found nothing.
	"blpop": {}, "brpop": {}, "blmove": {}, "brpoplpush": {}, "blmpop": {},
	"bzpopmin": {}, "bzpopmax": {}, "bzmpop": {},
}
