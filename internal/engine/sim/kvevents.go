package sim

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/strata-inference/strata/internal/config"
)

// KV-cache events as vLLM publishes them (vllm/distributed/kv_events.py, ZmqEventPublisher):
//
//   - a ZMQ PUB socket sends one multipart message per engine step that changed the prefix
//     cache: [topic, sequence as 8-byte big-endian, msgpack payload];
//   - the payload is the EventBatch [ts, [event, ...], data_parallel_rank] (msgspec
//     array_like, kept positional in every version), ts in Unix seconds as a float64;
//   - an event is BlockStored, BlockRemoved or AllBlocksCleared, encoded either as a tagged
//     array ["BlockStored", field, ...] in declaration order (vLLM < 0.24, msgspec
//     array_like=True) or as a tagged map {"type": "BlockStored", "field": ...} (vLLM >= 0.24,
//     vllm-project/vllm#42892);
//   - a block hash is published as vLLM does by default (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1,
//     kv_cache_utils.maybe_convert_block_hash): the last 8 bytes of the digest as a big-endian
//     unsigned integer, which msgpack encodes as uint64 above 2^63;
//   - a ROUTER replay socket, when configured, answers [identity, "", start sequence] with every
//     buffered message from that sequence as [identity, "", sequence, payload], then
//     [identity, "", -1 as 8 bytes, ""].
//
// Events follow the KV cache exactly: BlockStored when a full block is registered in the prefix
// cache (BlockPool.cache_full_blocks: one event per request and step, for its run of newly full
// blocks, with the parent of the run's first block, None for a request's first block),
// BlockRemoved when a cached block is evicted (BlockPool._maybe_evict_cached_block: one event
// per block), AllBlocksCleared when the prefix cache is reset. Identical blocks cached twice
// give two BlockStored, and two BlockRemoved when both are evicted, so a subscriber that counts
// references per hash reconstructs the cached set exactly.

// mediumGPU is vLLM's MEDIUM_GPU, the medium of every event of a GPU KV cache.
const mediumGPU = "GPU"

// kvReplayBuffer is vLLM's default buffer_steps: past batches kept for replay.
const kvReplayBuffer = 10_000

// KVEventKind says what a KVEvent reports; the values are those of the router's
// scheduling.KVEventKind (contract C2).
type KVEventKind int

// Kinds of KVEvent, vLLM's event classes.
const (
	KVBlockStored KVEventKind = iota + 1
	KVBlockRemoved
	KVAllBlocksCleared
)

// KVEvent is one KV-cache event in vLLM's model (vllm/distributed/kv_events.py), independent of
// its wire encoding: what Step.KVEvents carries and the ZMQ publisher encodes.
type KVEvent struct {
	Kind KVEventKind
	// BlockHashes are the blocks' hashes as vLLM publishes them (BlockHash.Uint64: the last 8
	// bytes of the digest, big-endian).
	BlockHashes []uint64
	// ParentHash is the hash of the block before BlockHashes[0] (BlockStored only); HasParent
	// is false for a request's first block.
	ParentHash uint64
	HasParent  bool
	// TokenIDs are the tokens of the stored blocks, BlockSize per block (BlockStored only).
	TokenIDs  []int
	BlockSize int
	// LoRAName and LoRAID name the adapter of a BlockStored ("" and 0 for the base model).
	LoRAName string
	LoRAID   int
	// Medium is vLLM's medium: always "GPU" here.
	Medium string
}

// eventRecorder records the KV events of the engine into *dst, copying hashes and token ids
// into arenas reused from step to step. Off, it records nothing.
type eventRecorder struct {
	on        bool
	blockSize int
	dst       *[]KVEvent
	hashes    []uint64
	tokens    []int
}

// reset empties the arenas: the events recorded so far must not be used any more.
func (r *eventRecorder) reset() { r.hashes, r.tokens = r.hashes[:0], r.tokens[:0] }

func (r *eventRecorder) addHashes(hs []BlockHash) []uint64 {
	i := len(r.hashes)
	for _, h := range hs {
		r.hashes = append(r.hashes, h.Uint64())
	}
	return r.hashes[i:len(r.hashes):len(r.hashes)]
}

// stored records one BlockStored for hs, whose first block follows parent (nil: none), with
// their tokens.
func (r *eventRecorder) stored(hs []BlockHash, parent *BlockHash, tokens []int, lora string, loraID int) {
	if r == nil || !r.on {
		return
	}
	e := KVEvent{Kind: KVBlockStored, BlockHashes: r.addHashes(hs), BlockSize: r.blockSize, LoRAName: lora, LoRAID: loraID, Medium: mediumGPU}
	if parent != nil {
		e.ParentHash, e.HasParent = parent.Uint64(), true
	}
	i := len(r.tokens)
	r.tokens = append(r.tokens, tokens...)
	e.TokenIDs = r.tokens[i:len(r.tokens):len(r.tokens)]
	*r.dst = append(*r.dst, e)
}

// removed records one BlockRemoved for h.
func (r *eventRecorder) removed(h BlockHash) {
	if r == nil || !r.on {
		return
	}
	i := len(r.hashes)
	r.hashes = append(r.hashes, h.Uint64())
	*r.dst = append(*r.dst, KVEvent{Kind: KVBlockRemoved, BlockHashes: r.hashes[i : i+1 : i+1], BlockSize: r.blockSize, Medium: mediumGPU})
}

// cleared records AllBlocksCleared.
func (r *eventRecorder) cleared() {
	if r == nil || !r.on {
		return
	}
	*r.dst = append(*r.dst, KVEvent{Kind: KVAllBlocksCleared, BlockSize: r.blockSize, Medium: mediumGPU})
}

// encodeKVEvent renders e in the array or the map encoding. Fields are those of vLLM's structs;
// msgspec's omit_defaults drops the defaulted fields that are unset (extra_keys, group_idx,
// kv_cache_spec_*), which only matters to the map encoding's consumers by name, and cuts
// trailing defaults of the array encoding.
func encodeKVEvent(e KVEvent, blockSize int, encoding string) any {
	var parent any
	if e.HasParent {
		parent = e.ParentHash
	}
	switch e.Kind {
	case KVBlockStored:
		hashes, tokens := e.BlockHashes, e.TokenIDs
		var loraID *int
		var loraName *string
		extra := make([]any, len(hashes))
		if e.LoRAName != "" {
			loraID, loraName = &e.LoRAID, &e.LoRAName
			for i := range extra {
				extra[i] = []any{e.LoRAName} // the block's extra keys, as hashed
			}
		}
		if encoding == config.KVEventsEncodingArray {
			// [tag, block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name]
			return []any{"BlockStored", hashes, parent, tokens, blockSize, loraID, mediumGPU, loraName}
		}
		return &storedMap{Type: "BlockStored", BlockHashes: hashes, ParentBlockHash: parent, TokenIDs: tokens,
			BlockSize: blockSize, LoRAID: loraID, Medium: mediumGPU, LoRAName: loraName, ExtraKeys: extra}
	case KVBlockRemoved:
		if encoding == config.KVEventsEncodingArray {
			return []any{"BlockRemoved", e.BlockHashes, mediumGPU}
		}
		return &removedMap{Type: "BlockRemoved", BlockHashes: e.BlockHashes, Medium: mediumGPU}
	default:
		if encoding == config.KVEventsEncodingArray {
			return []any{"AllBlocksCleared"}
		}
		return &clearedMap{Type: "AllBlocksCleared"}
	}
}

// storedMap is BlockStored in the map encoding, fields in vLLM's declaration order (msgspec
// writes them in that order; consumers must not rely on it). LoRAID and LoRAName have no
// default in vLLM, so they are always present, as null when unset.
type storedMap struct {
	Type            string   `msgpack:"type"`
	BlockHashes     []uint64 `msgpack:"block_hashes"`
	ParentBlockHash any      `msgpack:"parent_block_hash"`
	TokenIDs        []int    `msgpack:"token_ids"`
	BlockSize       int      `msgpack:"block_size"`
	LoRAID          *int     `msgpack:"lora_id"`
	Medium          string   `msgpack:"medium"`
	LoRAName        *string  `msgpack:"lora_name"`
	ExtraKeys       []any    `msgpack:"extra_keys"`
}

type removedMap struct {
	Type        string   `msgpack:"type"`
	BlockHashes []uint64 `msgpack:"block_hashes"`
	Medium      string   `msgpack:"medium"`
}

type clearedMap struct {
	Type string `msgpack:"type"`
}

// encodeKVBatch is vLLM's KVEventBatch payload: [ts, [events...], data_parallel_rank].
func encodeKVBatch(ts float64, events []KVEvent, blockSize int, encoding string) ([]byte, error) {
	enc := make([]any, len(events))
	for i, e := range events {
		enc[i] = encodeKVEvent(e, blockSize, encoding)
	}
	var buf bytes.Buffer
	m := msgpack.NewEncoder(&buf)
	m.UseCompactInts(true) // msgspec writes the smallest integer format, as does this
	if err := m.Encode([]any{ts, enc, 0}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// kvPublisher is vLLM's ZmqEventPublisher: a PUB socket, sequence numbers from 0, a replay
// buffer and an optional ROUTER socket serving replays.
type kvPublisher struct {
	pub, replay zmq4.Socket
	topic       []byte
	encoding    string
	blockSize   int

	mu     sync.Mutex // guards seq and buffer
	seq    uint64
	buffer []replayEntry // ring of the last kvReplayBuffer batches, oldest first

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type replayEntry struct {
	seq     uint64
	payload []byte
}

// endSeq is vLLM's END_SEQ: -1 as 8 signed big-endian bytes, ending a replay.
var endSeq = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func newKVPublisher(cfg config.Sim) (*kvPublisher, error) {
	enc := cfg.KVEventsEncoding
	if enc == "" {
		enc = config.KVEventsEncodingMap
	}
	if enc != config.KVEventsEncodingMap && enc != config.KVEventsEncodingArray {
		return nil, fmt.Errorf("sim: kv_events_encoding %q is neither map nor array", enc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &kvPublisher{topic: []byte(cfg.KVEventsTopic), encoding: enc, blockSize: cfg.BlockSize, cancel: cancel}
	p.pub = zmq4.NewPub(ctx)
	if err := p.pub.Listen(cfg.KVEventsEndpoint); err != nil {
		p.close()
		return nil, fmt.Errorf("sim: kv events: %w", err)
	}
	if cfg.KVEventsReplayEndpoint != "" {
		p.replay = zmq4.NewRouter(ctx)
		if err := p.replay.Listen(cfg.KVEventsReplayEndpoint); err != nil {
			p.close()
			return nil, fmt.Errorf("sim: kv events replay: %w", err)
		}
		p.wg.Add(1)
		go p.serveReplay()
	}
	return p, nil
}

// publish sends one batch. Called from the step loop only, so sequences follow steps.
func (p *kvPublisher) publish(ts float64, events []KVEvent) error {
	payload, err := encodeKVBatch(ts, events, p.blockSize, p.encoding)
	if err != nil {
		return err
	}
	p.mu.Lock()
	seq := p.seq
	p.seq++
	if len(p.buffer) == kvReplayBuffer {
		p.buffer = append(p.buffer[:0], p.buffer[1:]...)
	}
	p.buffer = append(p.buffer, replayEntry{seq: seq, payload: payload})
	p.mu.Unlock()
	return p.pub.SendMulti(zmq4.NewMsgFrom(p.topic, seqBytes(seq), payload))
}

func seqBytes(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

// serveReplay answers replay requests until the publisher closes. Malformed requests are
// ignored, as vLLM logs and drops them.
func (p *kvPublisher) serveReplay() {
	defer p.wg.Done()
	for {
		msg, err := p.replay.Recv()
		if err != nil {
			return // closed
		}
		if len(msg.Frames) != 3 || len(msg.Frames[2]) != 8 {
			continue
		}
		id, start := msg.Frames[0], binary.BigEndian.Uint64(msg.Frames[2])
		p.mu.Lock()
		var out []replayEntry
		for _, e := range p.buffer {
			if e.seq >= start {
				out = append(out, e)
			}
		}
		p.mu.Unlock()
		for _, e := range out {
			if p.replay.SendMulti(zmq4.NewMsgFrom(id, nil, seqBytes(e.seq), e.payload)) != nil {
				break
			}
		}
		_ = p.replay.SendMulti(zmq4.NewMsgFrom(id, nil, endSeq, nil))
	}
}

func (p *kvPublisher) endpoint() string { return zmqAddr(p.pub) }

func (p *kvPublisher) replayEndpoint() string {
	if p.replay == nil {
		return ""
	}
	return zmqAddr(p.replay)
}

func zmqAddr(s zmq4.Socket) string {
	a := s.Addr()
	if a == nil {
		return ""
	}
	return a.Network() + "://" + a.String()
}

func (p *kvPublisher) close() {
	p.cancel()
	if p.pub != nil {
		_ = p.pub.Close()
	}
	if p.replay != nil {
		_ = p.replay.Close()
	}
	p.wg.Wait()
}

// OffsetEndpointPort is vLLM's ZmqEventPublisher.offset_endpoint_port: the endpoint of replica
// (or data-parallel rank) i. A tcp:// endpoint gets i added to its port (port 0 stays 0, a free
// port each); inproc:// gets the suffix "_dp<i>"; i = 0 and "" are returned unchanged. Errors: a
// tcp:// endpoint without a numeric port, or another transport with i > 0.
func OffsetEndpointPort(endpoint string, i int) (string, error) {
	if endpoint == "" || i == 0 {
		return endpoint, nil
	}
	switch {
	case strings.HasPrefix(endpoint, "inproc://"):
		return endpoint + "_dp" + strconv.Itoa(i), nil
	case strings.HasPrefix(endpoint, "tcp://"):
		host, port, err := net.SplitHostPort(strings.TrimPrefix(endpoint, "tcp://"))
		if err != nil {
			return "", fmt.Errorf("sim: endpoint %q: %w", endpoint, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			return "", fmt.Errorf("sim: endpoint %q: port %q is not a number", endpoint, port)
		}
		if n == 0 {
			return endpoint, nil
		}
		return "tcp://" + net.JoinHostPort(host, strconv.Itoa(n+i)), nil
	}
	return "", errors.New("sim: endpoint " + strconv.Quote(endpoint) + ": only tcp:// and inproc:// endpoints can be offset")
}

// kvNow is the ts of a batch: Unix seconds with sub-second precision, as Python's time.time().
func kvNow(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
