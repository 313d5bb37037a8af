package proxy

import (
	"strconv"
	"strings"

	"github.com/raftproxy/raftproxy/resp"
)

// keySpec is one of a command's key specifications from redis 7's COMMAND
// INFO: where the search for keys begins (an argument index, or the
// argument after a keyword) and how keys are found from there (a range, or
// a count given in an argument). It is redis's own description of its
// arguments, so raftproxy needs no per-command key table.
type keySpec struct {
	write bool // the keys may be modified (flags RW, OW or RM)

	keyword   string // begin_search by keyword; "" for by index
	index     int    // begin_search index, or the keyword's startfrom
	keynum    bool   // find_keys by keynum; else by range
	lastkey   int    // range
	keystep   int    // range and keynum
	limit     int    // range
	keynumidx int    // keynum
	firstkey  int    // keynum
	unknown   bool   // a search type this code does not know
}

// parseKeySpecs reads the key specifications element of a COMMAND entry.
// Each spec is a flat list of name/value pairs.
func parseKeySpecs(v resp.Value) []keySpec {
	var out []keySpec
	for _, sv := range v.Elems {
		ks := keySpec{keystep: 1}
		for i := 0; i+1 < len(sv.Elems); i += 2 {
			val := sv.Elems[i+1]
			switch string(sv.Elems[i].Str) {
			case "flags":
				for _, f := range val.Elems {
					switch string(f.Str) {
					case "RW", "OW", "RM":
						ks.write = true
					}
				}
			case "begin_search":
				typ, spec := typeAndSpec(val)
				switch typ {
				case "index":
					ks.index = specInt(spec, "index")
				case "keyword":
					ks.keyword = specStr(spec, "keyword")
					ks.index = specInt(spec, "startfrom")
				default:
					ks.unknown = true
				}
			case "find_keys":
				typ, spec := typeAndSpec(val)
				switch typ {
				case "range":
					ks.lastkey = specInt(spec, "lastkey")
					ks.keystep = specInt(spec, "keystep")
					ks.limit = specInt(spec, "limit")
				case "keynum":
					ks.keynum = true
					ks.keynumidx = specInt(spec, "keynumidx")
					ks.firstkey = specInt(spec, "firstkey")
					ks.keystep = specInt(spec, "keystep")
				default:
					ks.unknown = true
				}
			}
		}
		if ks.keystep <= 0 {
			ks.keystep = 1
		}
		out = append(out, ks)
	}
	return out
}

func typeAndSpec(v resp.Value) (string, resp.Value) {
	var typ string
	var spec resp.Value
	for i := 0; i+1 < len(v.Elems); i += 2 {
		switch string(v.Elems[i].Str) {
		case "type":
			typ = string(v.Elems[i+1].Str)
		case "spec":
			spec = v.Elems[i+1]
		}
	}
	return typ, spec
}

func specField(spec resp.Value, name string) (resp.Value, bool) {
	for i := 0; i+1 < len(spec.Elems); i += 2 {
		if string(spec.Elems[i].Str) == name {
			return spec.Elems[i+1], true
		}
	}
	return resp.Value{}, false
}

func specInt(spec resp.Value, name string) int {
	v, _ := specField(spec, name)
	return int(v.Int)
}

func specStr(spec resp.Value, name string) string {
	v, _ := specField(spec, name)
	return string(v.Str)
}

// keys appends to dst the positions in args of the keys this spec finds,
// as redis's getKeysUsingKeySpecs does. ok is false when the spec cannot be
// followed (an unknown search type, a count that is not a number).
func (ks keySpec) keys(args [][]byte, dst []int) ([]int, bool) {
	if ks.unknown {
		return dst, false
	}
	argc := len(args)
	first := 0
	if ks.keyword == "" {
		first = ks.index
	} else {
		start, end, step := ks.index, argc, 1
		if ks.index < 0 {
			start, end, step = argc+ks.index, 0, -1
		}
		for i := start; i != end && i >= 1 && i < argc; i += step {
			if strings.EqualFold(string(args[i]), ks.keyword) {
				first = i + 1
				break
			}
		}
		if first == 0 {
			return dst, true // the keyword is absent: no keys from this spec
		}
	}
	if first <= 0 || first >= argc {
		return dst, true
	}
	var last int
	step := ks.keystep
	if ks.keynum {
		ni := first + ks.keynumidx
		if ni >= argc {
			return dst, true
		}
		n, err := strconv.Atoi(string(args[ni]))
		if err != nil || n < 0 || n > argc {
			return dst, false
		}
		if n == 0 {
			return dst, true
		}
		first += ks.firstkey
		last = first + (n-1)*step
	} else {
		switch {
		case ks.lastkey >= 0:
			last = first + ks.lastkey
		case ks.limit == 0:
			last = argc + ks.lastkey
		default:
			last = first + ((argc-first)/ks.limit + ks.lastkey)
		}
	}
	if last >= argc {
		last = argc - 1
	}
	for i := first; i <= last; i += step {
		dst = append(dst, i)
	}
	return dst, true
}

// writtenKeys returns the keys a write command may modify, in the
// connection's database. all is true when that cannot be told from its
// arguments (an unknown module command, a spec this code cannot follow) or
// when the command reaches beyond one database's named keys (FLUSHALL,
// SWAPDB, MOVE, COPY ... DB): then every key must be assumed modified.
func (t table) writtenKeys(args [][]byte) (keys [][]byte, all bool) {
	if len(args) == 0 {
		return nil, false
	}
	sp, _ := t.lookup(args)
	if sp == nil || sp.unknown {
		return nil, true
	}
	switch sp.class {
	case classRead, classLocal, classProxy:
		return nil, false
	}
	switch sp.name {
	case "publish", "spublish":
		// A (shard) channel is not a key: publishing modifies no data.
		return nil, false
	case "sort":
		// Redis cannot describe SORT's STORE position in a key spec.
		for i := len(args) - 2; i >= 2; i-- {
			if strings.EqualFold(string(args[i]), "store") {
				return [][]byte{args[i+1]}, false
			}
		}
		return nil, false
	case "flushdb", "flushall", "swapdb", "move":
		return nil, true
	case "copy":
		for _, a := range args[3:] {
			if strings.EqualFold(string(a), "db") {
				return nil, true
			}
		}
	}
	var pos [16]int
	idx := pos[:0]
	for _, ks := range sp.keySpecs {
		if !ks.write {
			continue
		}
		var ok bool
		idx, ok = ks.keys(args, idx)
		if !ok {
			return nil, true
		}
	}
	keys = make([][]byte, len(idx))
	for i, p := range idx {
		keys[i] = args[p]
	}
	return keys, false
}

// accessedKeys returns the keys a command reads or writes, in the
// connection's database, as far as its key specs tell (nil for none or
// unknown): those that expired by the log's time are deleted before it
// runs (backend.StateMachine.SetKeys), or checked before a read
// (proxy/expiry.go).
func (t table) accessedKeys(args [][]byte) [][]byte {
	if len(args) == 0 {
		return nil
	}
	sp, _ := t.lookup(args)
	if sp == nil || sp.unknown {
		return nil
	}
	switch sp.name {
	case "publish", "spublish":
		return nil
	}
	var pos [16]int
	idx := pos[:0]
	for _, ks := range sp.keySpecs {
		idx, _ = ks.keys(args, idx)
	}
	if sp.name == "sort" {
		for i := len(args) - 2; i >= 2; i-- {
			if strings.EqualFold(string(args[i]), "store") {
				idx = append(idx, i+1)
				break
			}
		}
	}
	if len(idx) == 0 {
		return nil
	}
	keys := make([][]byte, len(idx))
	for i, p := range idx {
		keys[i] = args[p]
	}
	return keys
}
