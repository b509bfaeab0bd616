package vllm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrMalformed marks a KV-event message or metrics text that does not follow vLLM's format.
// Decoders wrap it; callers skip the input and count it.
var ErrMalformed = errors.New("vllm: malformed input")

// EventType is the tag of a KV-cache event (vllm/distributed/kv_events.py class names).
type EventType uint8

// The KV-cache events vLLM publishes.
const (
	// BlockStored: full blocks were registered in the prefix cache.
	BlockStored EventType = iota + 1
	// BlockRemoved: cached blocks were evicted.
	BlockRemoved
	// AllBlocksCleared: the prefix cache was reset.
	AllBlocksCleared
)

func (t EventType) String() string {
	switch t {
	case BlockStored:
		return "BlockStored"
	case BlockRemoved:
		return "BlockRemoved"
	case AllBlocksCleared:
		return "AllBlocksCleared"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// BlockHash is a block hash as vLLM publishes it by default (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1,
// vllm/v1/core/kv_cache_utils.py maybe_convert_block_hash): the last 8 bytes of the 32-byte
// sha256_cbor digest, read big-endian. A replica publishing raw digests (the variable set to 0)
// sends 32-byte binary hashes; the decoder reduces them the same way, so both modes give the
// same key for the same block. A negative integer (Python's builtin hash) is kept as its
// two's-complement bits.
type BlockHash uint64

// Event is one decoded KV-cache event. Fields not carried by an event's type are zero.
type Event struct {
	Type EventType
	// BlockHashes are the stored or removed blocks, in order (BlockStored: consecutive blocks
	// of one request, each the parent of the next).
	BlockHashes []BlockHash
	// ParentBlockHash is the block before BlockHashes[0]; HasParent is false when the first
	// block starts its request (parent_block_hash None).
	ParentBlockHash BlockHash
	HasParent       bool
	// TokenIDs are the tokens of the stored blocks, len = len(BlockHashes) * BlockSize.
	TokenIDs  []int
	BlockSize int
	// LoRAName is the adapter whose KV the blocks hold ("" for the base model); LoRAID is
	// vLLM's deprecated lora_id (0 when absent).
	LoRAName string
	LoRAID   int64
	// Medium is where the blocks live ("GPU", "CPU", ...; "" when not sent).
	Medium string
	// GroupIdx is the KV-cache group (hybrid models; 0 when not sent).
	GroupIdx int
}

// Batch is one published message: vLLM's KVEventBatch with the message's topic and sequence.
type Batch struct {
	Topic string
	// Seq is the publisher's sequence number, from 0, one per message.
	Seq uint64
	// TS is the publish time in Unix seconds.
	TS float64
	// DataParallelRank is the publisher's DP rank, -1 when the payload has none.
	DataParallelRank int
	Events           []Event
	// Skipped counts events of the batch that were malformed or of an unknown type: they are
	// left out of Events, the rest of the batch is kept.
	Skipped int
}

// DecodeMessage decodes a multipart ZMQ message [topic, sequence (8 bytes big-endian), payload]
// (vLLM ZmqEventPublisher). Errors wrap ErrMalformed.
func DecodeMessage(frames [][]byte) (Batch, error) {
	if len(frames) != 3 {
		return Batch{}, fmt.Errorf("%w: kv-event message has %d frames, want 3", ErrMalformed, len(frames))
	}
	if len(frames[1]) != 8 {
		return Batch{}, fmt.Errorf("%w: kv-event sequence frame has %d bytes, want 8", ErrMalformed, len(frames[1]))
	}
	b, err := DecodePayload(frames[2])
	if err != nil {
		return Batch{}, err
	}
	b.Topic = string(frames[0])
	b.Seq = binary.BigEndian.Uint64(frames[1])
	return b, nil
}

// DecodePayload decodes a msgpack KVEventBatch: [ts, [event, ...], data_parallel_rank] (the
// rank may be absent; a map {"ts","events","data_parallel_rank"} is accepted too). Each event
// may be a tagged array ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
// lora_id, medium, lora_name, extra_keys, group_idx, ...] (vLLM < 0.24) or a tagged map
// {"type": "BlockStored", "block_hashes": ..., ...} (vLLM >= 0.24); both may appear in one
// batch. Unknown trailing fields and map keys are ignored. Errors wrap ErrMalformed; a bad
// event only increments Batch.Skipped.
func DecodePayload(payload []byte) (Batch, error) {
	if err := checkMsgpack(payload); err != nil {
		return Batch{}, fmt.Errorf("%w: kv-event payload: %v", ErrMalformed, err)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(payload))
	dec.UseLooseInterfaceDecoding(true)
	v, err := dec.DecodeInterface()
	if err != nil {
		return Batch{}, fmt.Errorf("%w: kv-event payload: %v", ErrMalformed, err)
	}
	var ts, events, rank any
	switch t := v.(type) {
	case []any:
		if len(t) < 2 {
			return Batch{}, fmt.Errorf("%w: kv-event batch has %d fields, want at least 2", ErrMalformed, len(t))
		}
		ts, events = t[0], t[1]
		if len(t) > 2 {
			rank = t[2]
		}
	case map[string]any:
		ts, events, rank = t["ts"], t["events"], t["data_parallel_rank"]
	default:
		return Batch{}, fmt.Errorf("%w: kv-event batch is a %T, want an array", ErrMalformed, v)
	}
	b := Batch{DataParallelRank: -1}
	var ok bool
	if b.TS, ok = toFloat(ts); !ok {
		return Batch{}, fmt.Errorf("%w: kv-event batch ts is a %T", ErrMalformed, ts)
	}
	if rank != nil {
		r, ok := toInt(rank)
		if !ok || r < 0 || r > math.MaxInt32 {
			return Batch{}, fmt.Errorf("%w: kv-event batch data_parallel_rank %v", ErrMalformed, rank)
		}
		b.DataParallelRank = int(r)
	}
	list, ok := events.([]any)
	if !ok {
		return Batch{}, fmt.Errorf("%w: kv-event batch events is a %T, want an array", ErrMalformed, events)
	}
	b.Events = make([]Event, 0, len(list))
	for _, raw := range list {
		e, err := decodeEvent(raw)
		if err != nil {
			b.Skipped++
			continue
		}
		b.Events = append(b.Events, e)
	}
	return b, nil
}

// Field order of the array encoding, from the struct declarations of kv_events.py (the tag
// comes first). Later vLLM versions append fields; absent trailing fields are defaults.
var (
	storedFields  = []string{"block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name", "extra_keys", "group_idx"}
	removedFields = []string{"block_hashes", "medium", "group_idx"}
)

// decodeEvent turns a tagged array or a tagged map into an Event.
func decodeEvent(raw any) (Event, error) {
	var tag string
	fields := map[string]any{}
	switch t := raw.(type) {
	case []any:
		if len(t) == 0 {
			return Event{}, errors.New("empty event")
		}
		s, ok := t[0].(string)
		if !ok {
			return Event{}, errors.New("event tag is not a string")
		}
		tag = s
		var names []string
		switch tag {
		case "BlockStored":
			names = storedFields
		case "BlockRemoved":
			names = removedFields
		}
		for i, name := range names {
			if i+1 < len(t) {
				fields[name] = t[i+1]
			}
		}
	case map[string]any:
		s, ok := t["type"].(string)
		if !ok {
			return Event{}, errors.New("event has no string type")
		}
		tag, fields = s, t
	default:
		return Event{}, fmt.Errorf("event is a %T", raw)
	}
	var e Event
	switch tag {
	case "BlockStored":
		e.Type = BlockStored
	case "BlockRemoved":
		e.Type = BlockRemoved
	case "AllBlocksCleared":
		e.Type = AllBlocksCleared
		return e, nil
	default:
		return Event{}, fmt.Errorf("unknown event type %q", tag)
	}
	hs, ok := fields["block_hashes"].([]any)
	if !ok || len(hs) == 0 {
		return Event{}, errors.New("block_hashes is not a non-empty array")
	}
	e.BlockHashes = make([]BlockHash, len(hs))
	for i, h := range hs {
		if e.BlockHashes[i], ok = toHash(h); !ok {
			return Event{}, fmt.Errorf("block hash %d is a %T", i, h)
		}
	}
	if m, ok := fields["medium"].(string); ok {
		e.Medium = m
	}
	if g, ok := toInt(fields["group_idx"]); ok {
		e.GroupIdx = int(g)
	}
	if e.Type == BlockRemoved {
		return e, nil
	}
	if p := fields["parent_block_hash"]; p != nil {
		if e.ParentBlockHash, ok = toHash(p); !ok {
			return Event{}, fmt.Errorf("parent_block_hash is a %T", p)
		}
		e.HasParent = true
	}
	bs, ok := toInt(fields["block_size"])
	if !ok || bs < 1 || bs > 1<<20 {
		return Event{}, fmt.Errorf("block_size %v", fields["block_size"])
	}
	e.BlockSize = int(bs)
	toks, ok := fields["token_ids"].([]any)
	if !ok {
		return Event{}, errors.New("token_ids is not an array")
	}
	e.TokenIDs = make([]int, len(toks))
	for i, tk := range toks {
		v, ok := toInt(tk)
		if !ok || v < 0 || v > math.MaxInt32 {
			return Event{}, fmt.Errorf("token id %d: %v", i, tk)
		}
		e.TokenIDs[i] = int(v)
	}
	if id, ok := toInt(fields["lora_id"]); ok {
		e.LoRAID = id
	}
	if n, ok := fields["lora_name"].(string); ok {
		e.LoRAName = n
	}
	return e, nil
}

// toHash accepts an integer hash (uint64, or int64 kept as its bits) or a binary digest of 1 to
// 64 bytes (msgpack bin), reduced to its last 8 bytes big-endian.
func toHash(v any) (BlockHash, bool) {
	switch h := v.(type) {
	case uint64:
		return BlockHash(h), true
	case int64:
		return BlockHash(uint64(h)), true
	case string: // msgpack/v5 returns a bin (Python bytes) as a string
		return toHash([]byte(h))
	case []byte:
		if len(h) == 0 || len(h) > 64 {
			return 0, false
		}
		var b [8]byte
		if len(h) >= 8 {
			copy(b[:], h[len(h)-8:])
		} else {
			copy(b[8-len(h):], h)
		}
		return BlockHash(binary.BigEndian.Uint64(b[:])), true
	}
	return 0, false
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	}
	return 0, false
}
