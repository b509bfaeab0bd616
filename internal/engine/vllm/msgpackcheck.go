package vllm

import (
	"encoding/binary"
	"errors"
)

// maxMsgpackDepth bounds the nesting of a KV-event payload: vLLM's is 4 deep (batch, events,
// event, hash list or extra key tuple); 32 leaves room for future fields.
const maxMsgpackDepth = 32

// checkMsgpack validates the framing of one msgpack value filling b, without decoding it: every
// length fits in the bytes that remain, nesting stays under maxMsgpackDepth, and nothing
// trails. The generic decoder trusts declared lengths and allocates them up front, so a 10-byte
// message declaring a 4 GB array would exhaust memory; after this check every allocation is
// bounded by len(b). (Format: github.com/msgpack/msgpack spec.md.)
func checkMsgpack(b []byte) error {
	errShort := errors.New("msgpack: length exceeds the message")
	// stack[i] is the number of values still to read at depth i.
	stack := []int{1}
	pos := 0
	n := func(size int) (int, bool) { // reads a big-endian length of size bytes
		if pos+size > len(b) {
			return 0, false
		}
		var v uint64
		switch size {
		case 1:
			v = uint64(b[pos])
		case 2:
			v = uint64(binary.BigEndian.Uint16(b[pos:]))
		case 4:
			v = uint64(binary.BigEndian.Uint32(b[pos:]))
		}
		pos += size
		if v > uint64(len(b)) {
			return 0, false
		}
		return int(v), true
	}
	for len(stack) > 0 {
		if stack[len(stack)-1] == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		stack[len(stack)-1]--
		if pos >= len(b) {
			return errShort
		}
		c := b[pos]
		pos++
		skip, items := 0, 0
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			items = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			items = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			l, ok := n(1)
			if !ok {
				return errShort
			}
			skip = l
		case c == 0xc5 || c == 0xda:
			l, ok := n(2)
			if !ok {
				return errShort
			}
			skip = l
		case c == 0xc6 || c == 0xdb:
			l, ok := n(4)
			if !ok {
				return errShort
			}
			skip = l
		case c == 0xc7 || c == 0xc8 || c == 0xc9:
			l, ok := n([...]int{1, 2, 4}[c-0xc7])
			if !ok {
				return errShort
			}
			skip = l + 1
		case c == 0xca:
			skip = 4
		case c == 0xcb:
			skip = 8
		case c >= 0xcc && c <= 0xcf:
			skip = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3:
			skip = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8:
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc || c == 0xde:
			l, ok := n(2)
			if !ok {
				return errShort
			}
			items = l
			if c == 0xde {
				items *= 2
			}
		case c == 0xdd || c == 0xdf:
			l, ok := n(4)
			if !ok {
				return errShort
			}
			items = l
			if c == 0xdf {
				items *= 2
			}
		default: // 0xc1, never used
			return errors.New("msgpack: invalid type code")
		}
		if skip > len(b)-pos || items > len(b)-pos {
			return errShort
		}
		pos += skip
		if items > 0 {
			if len(stack) >= maxMsgpackDepth {
				return errors.New("msgpack: nested too deep")
			}
			stack = append(stack, items)
		}
	}
	if pos != len(b) {
		return errors.New("msgpack: trailing bytes")
	}
	return nil
}
