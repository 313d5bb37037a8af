package proxy

import "bytes"

// numSlots is Redis Cluster's fixed number of hash slots.
const numSlots = 16384

// crc16tab is CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the
// checksum Redis Cluster hashes keys with.
var crc16tab = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc = crc<<8 ^ crc16tab[byte(crc>>8)^c]
	}
	return crc
}

// keySlot is the Redis Cluster hash slot of key: only the part between the
// first '{' and the next '}' is hashed when it is not empty (a hash tag),
// so that related keys can be made to share a slot.
func keySlot(key []byte) int {
	if open := bytes.IndexByte(key, '{'); open >= 0 {
		if end := bytes.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	return int(crc16(key) & (numSlots - 1))
}

// redirectSlot is the slot a -MOVED names for a command: that of its first
// key by redis's key specs; a command without keys names slot 0. It runs
// only on the redirect path, so it may look the command up again.
func (t table) redirectSlot(args [][]byte) int {
	if len(args) == 0 {
		return 0
	}
	sp, _ := t.lookup(args)
	if sp == nil {
		return 0
	}
	var pos [8]int
	first := -1
	for _, ks := range sp.keySpecs {
		idx, ok := ks.keys(args, pos[:0])
		if !ok {
			continue
		}
		for _, i := range idx {
			if first < 0 || i < first {
				first = i
			}
		}
	}
	if first < 1 || first >= len(args) {
		return 0
	}
	return keySlot(args[first])
}
