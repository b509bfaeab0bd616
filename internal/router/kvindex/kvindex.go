// Package kvindex is the router's index of the KV-cache blocks each endpoint holds, rebuilt from
// the engines' KV events (vLLM vllm/distributed/kv_events.py: BlockStored, BlockRemoved,
// AllBlocksCleared), for the precise prefix-cache scorer.
//
// Blocks are keyed by the router's own chained hash of their tokens, not by the engine's block
// hash: vLLM's hashes depend on PYTHONHASHSEED (its NONE_HASH is random unless the seed is set),
// so two replicas may give the same prefix different hashes, and the router could not compute
// them for a new request anyway. The key of a block is
//
//	key = xxhash64(le64(parent key) || le32(token ids of the block)...)
//
// with the parent key of a chain's first block derived from the LoRA adapter name (blocks of
// different adapters never share a key), after vLLM's chained block hash
// (vllm/v1/core/kv_cache_utils.py, hash_block_tokens). Each endpoint keeps a map from its engine
// hashes to keys, to resolve the parent of a BlockStored and the blocks of a BlockRemoved.
//
// The index maps each key to the endpoints holding the block, split into 64 shards with their
// own RWMutex, so Score (read locks, one per looked-up block) runs concurrently with events of
// other endpoints and other shards. Events of one endpoint are applied under that endpoint's
// mutex, then the shard's write lock (always in that order). A key held by one endpoint (most)
// is one 16-byte slot of an open-addressing table; a key held by several is kept in a map of
// holder lists, with bitsets over endpoint ids once six or more hold it, so a prompt prefix every
// endpoint holds is scored in a few word operations per block.
//
// Memory is bounded by MaxBlocksPerEndpoint engine blocks per endpoint: past it, an arbitrary
// block of that endpoint is dropped (counted in Stats.Evicted). A healthy feed never reaches it
// when the bound exceeds the engine's GPU plus CPU block count; it guards against lost
// BlockRemoved events.
package kvindex

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// numShards splits the key map; a power of two, so a key's shard is its low bits.
const numShards = 64

// maxMedia is the number of media (tiers) an index tracks.
const maxMedia = 4

// Config configures an Index.
type Config struct {
	// BlockSize is the engine's KV block size in tokens (vLLM --block-size, 16 by default). Events
	// of another block size are dropped (Stats.BadEvents).
	BlockSize int
	// MaxBlocksPerEndpoint bounds the engine blocks indexed per endpoint (>= 1).
	MaxBlocksPerEndpoint int
	// Media lists the tracked media with the weight of a hit in each, e.g. GPU 1, CPU 0.8 (the
	// defaults of llm-d's kv-cache indexer backends). At most 4; weights in [0,1]. Events of other
	// media are dropped (Stats.OtherMedium).
	Media []Medium
}

// Medium is one KV-cache tier and the weight of a prefix hit in it.
type Medium struct {
	Name   string
	Weight float64
}

// Stats counts the index's contents and the events it could not apply. Counters only grow.
type Stats struct {
	// Keys is the number of distinct block keys indexed; Blocks the number of (endpoint, engine
	// hash) pairs.
	Keys, Blocks int
	// Orphans: stored blocks whose parent hash the index did not know (it joined mid-stream or
	// missed events); they cannot be keyed and are skipped.
	Orphans uint64
	// UnknownRemoved: removals of hashes (or media) the index did not hold.
	UnknownRemoved uint64
	// BadEvents: events with a block size other than Config.BlockSize or token ids that do not
	// fill their blocks.
	BadEvents uint64
	// OtherMedium: events of a medium not in Config.Media.
	OtherMedium uint64
	// Evicted: blocks dropped to stay within MaxBlocksPerEndpoint.
	Evicted uint64
}

// holder is one endpoint holding a key: how many engine blocks of each medium.
type holder struct {
	ep     uint16
	counts [maxMedia]uint16
}

// wideHolders is the holder count from which an entry also keeps bitsets of its holders, so
// that Score handles a block every endpoint holds (a shared system prompt) in a few word
// operations instead of a loop over its holders; narrowHolders is where it drops them again.
const (
	wideHolders   = 6
	narrowHolders = 3
)

// entry is a key held by several endpoints: its holders and, when wide, bitsets over endpoint
// ids: bits[0:w] marks the endpoints holding it in any medium, bits[(1+m)*w:(2+m)*w] those
// holding it in medium m, with w = len(bits) / (1 + media).
type entry struct {
	holders []holder
	bits    []uint64
}

// multiEP in shard.one marks a key held by several endpoints, found in shard.multi.
const multiEP = math.MaxUint16

// shard is one part of the key map. Most blocks are held by one endpoint: their holder lives
// packed in one, an open-addressing table of 16-byte slots (one cache line visit per lookup,
// no pointers for the garbage collector to scan); keys held by several endpoints are marked
// there with multiEP and kept in multi.
type shard struct {
	mu    sync.RWMutex
	one   keyTable
	multi map[uint64]*entry
}

// maxCount bounds a holder's copies per medium (12 bits each when packed); further copies are
// not counted.
const maxCount = 1<<12 - 1

// pack encodes h in 64 bits: ep in bits 0-15, the count of medium m in bits 16+12m to 27+12m.
func pack(h holder) uint64 {
	v := uint64(h.ep)
	for m, c := range h.counts {
		v |= uint64(c&maxCount) << (16 + 12*m)
	}
	return v
}

func unpack(v uint64) holder {
	h := holder{ep: uint16(v)}
	for m := range h.counts {
		h.counts[m] = uint16(v>>(16+12*m)) & maxCount
	}
	return h
}

// keyTable is a linear-probing hash table from block key to packed holder. Keys are already
// uniform hashes, so a key's home slot is its bits above the shard bits; key 0 marks an empty
// slot (chain never returns 0). Deletion shifts later entries back (no tombstones). The table
// grows at 3/4 load and never shrinks: its size follows the peak number of keys, which the
// per-endpoint bound caps. Not safe for concurrent use: the shard's lock guards it.
type keyTable struct {
	slots []keySlot
	n     int
}

type keySlot struct{ key, val uint64 }

func (t *keyTable) home(k uint64) int { return int(k>>6) & (len(t.slots) - 1) }

func (t *keyTable) get(k uint64) (uint64, bool) {
	if t.n == 0 {
		return 0, false
	}
	mask := len(t.slots) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		switch t.slots[i].key {
		case k:
			return t.slots[i].val, true
		case 0:
			return 0, false
		}
	}
}

func (t *keyTable) put(k, v uint64) {
	if (t.n+1)*4 > len(t.slots)*3 {
		old := t.slots
		t.slots, t.n = make([]keySlot, max(16, 2*len(old))), 0
		for _, sl := range old {
			if sl.key != 0 {
				t.put(sl.key, sl.val)
			}
		}
	}
	mask := len(t.slots) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		switch t.slots[i].key {
		case k:
			t.slots[i].val = v
			return
		case 0:
			t.slots[i] = keySlot{k, v}
			t.n++
			return
		}
	}
}

func (t *keyTable) del(k uint64) {
	if t.n == 0 {
		return
	}
	mask := len(t.slots) - 1
	i := t.home(k)
	for ; t.slots[i].key != k; i = (i + 1) & mask {
		if t.slots[i].key == 0 {
			return
		}
	}
	// Backward shift: move each later entry of the run whose home is not in (i, j] into the hole.
	for j := (i + 1) & mask; t.slots[j].key != 0; j = (j + 1) & mask {
		h := t.home(t.slots[j].key)
		if i <= j && (h <= i || h > j) || i > j && h <= i && h > j {
			t.slots[i], i = t.slots[j], j
		}
	}
	t.slots[i] = keySlot{}
	t.n--
}

// engBlock is one engine hash of an endpoint: its key and copies per medium.
type engBlock struct {
	key    uint64
	counts [maxMedia]uint16
}

type endpoint struct {
	mu     sync.Mutex
	id     uint16
	blocks map[uint64]engBlock
	buf    []byte
}

// Index is the KV block index. It is safe for concurrent use.
type Index struct {
	blockSize int
	maxBlocks int
	media     []string
	weights   []float64

	shards [numShards]shard

	epMu sync.RWMutex
	eps  map[string]*endpoint

	orphans, unknownRemoved, badEvents, otherMedium, evicted atomic.Uint64
}

// New returns an empty index. Errors name the invalid field.
func New(cfg Config) (*Index, error) {
	switch {
	case cfg.BlockSize < 1:
		return nil, fmt.Errorf("block size: must be positive, got %d", cfg.BlockSize)
	case cfg.MaxBlocksPerEndpoint < 1:
		return nil, fmt.Errorf("max blocks per endpoint: must be positive, got %d", cfg.MaxBlocksPerEndpoint)
	case len(cfg.Media) == 0 || len(cfg.Media) > maxMedia:
		return nil, fmt.Errorf("media: want 1 to %d, got %d", maxMedia, len(cfg.Media))
	}
	ix := &Index{blockSize: cfg.BlockSize, maxBlocks: cfg.MaxBlocksPerEndpoint, eps: map[string]*endpoint{}}
	for _, m := range cfg.Media {
		if m.Name == "" || !(m.Weight >= 0 && m.Weight <= 1) {
			return nil, fmt.Errorf("media: %q: weight must be in [0,1] and the name set, got %g", m.Name, m.Weight)
		}
		for _, n := range ix.media {
			if n == m.Name {
				return nil, fmt.Errorf("media: %q listed twice", m.Name)
			}
		}
		ix.media = append(ix.media, m.Name)
		ix.weights = append(ix.weights, m.Weight)
	}
	for i := range ix.shards {
		ix.shards[i].multi = map[uint64]*entry{}
	}
	return ix, nil
}

// BlockSize returns the block size in tokens.
func (ix *Index) BlockSize() int { return ix.blockSize }

// rootKey is the parent key of a chain's first block: blocks of different LoRA adapters (or the
// base model, "") never share a key.
func rootKey(lora string) uint64 {
	return xxhash.Sum64String("strata/kvindex/root\x00" + lora)
}

// chain returns the key of the block of tokens after parent. buf is scratch space.
func chain(parent uint64, tokens []int, buf []byte) (uint64, []byte) {
	if n := 8 + 4*len(tokens); cap(buf) < n {
		buf = make([]byte, n)
	} else {
		buf = buf[:n]
	}
	binary.LittleEndian.PutUint64(buf, parent)
	b := buf[8:]
	for i, t := range tokens {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(t))
	}
	k := xxhash.Sum64(buf)
	if k == 0 { // 0 marks an empty keyTable slot
		k = 1
	}
	return k, buf
}

// Keys appends to dst the keys of the full blocks of tokens (a trailing partial block has no
// key, as vLLM caches only full blocks) computed with adapter lora ("" = base model), and
// returns it.
func (ix *Index) Keys(tokens []int, lora string, dst []uint64) []uint64 {
	n := len(tokens) / ix.blockSize
	dst = slices.Grow(dst, n)
	buf := make([]byte, 8+4*ix.blockSize)
	k := rootKey(lora)
	for i := range n {
		k, buf = chain(k, tokens[i*ix.blockSize:(i+1)*ix.blockSize], buf)
		dst = append(dst, k)
	}
	return dst
}

func (ix *Index) endpoint(name string, create bool) *endpoint {
	ix.epMu.RLock()
	e := ix.eps[name]
	ix.epMu.RUnlock()
	if e != nil || !create {
		return e
	}
	ix.epMu.Lock()
	defer ix.epMu.Unlock()
	if e = ix.eps[name]; e == nil {
		if len(ix.eps) >= multiEP {
			return nil
		}
		e = &endpoint{id: uint16(len(ix.eps)), blocks: map[uint64]engBlock{}}
		ix.eps[name] = e
	}
	return e
}

func (ix *Index) medium(name string) int {
	if name == "" {
		name = scheduling.MediumGPU
	}
	for i, m := range ix.media {
		if m == name {
			return i
		}
	}
	return -1
}

// Apply applies events of the endpoint named name, in order. It never fails: events it cannot
// apply are counted in Stats.
func (ix *Index) Apply(name string, events []scheduling.KVEvent) {
	e := ix.endpoint(name, true)
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range events {
		ix.apply(e, &events[i])
	}
}

func (ix *Index) apply(e *endpoint, ev *scheduling.KVEvent) {
	switch ev.Kind {
	case scheduling.BlockStored:
		m := ix.medium(ev.Medium)
		if m < 0 {
			ix.otherMedium.Add(1)
			return
		}
		if ev.BlockSize != ix.blockSize || len(ev.TokenIDs) != len(ev.BlockHashes)*ix.blockSize {
			ix.badEvents.Add(1)
			return
		}
		parent := rootKey(ev.LoRAName)
		if ev.HasParent {
			pb, ok := e.blocks[ev.ParentHash]
			if !ok {
				ix.orphans.Add(uint64(len(ev.BlockHashes)))
				return
			}
			parent = pb.key
		}
		for i, h := range ev.BlockHashes {
			var k uint64
			k, e.buf = chain(parent, ev.TokenIDs[i*ix.blockSize:(i+1)*ix.blockSize], e.buf)
			ix.store(e, h, k, m)
			parent = k
		}
		for len(e.blocks) > ix.maxBlocks {
			for h, b := range e.blocks {
				for m, c := range b.counts {
					for range c {
						ix.remove(e, h, m)
					}
				}
				ix.evicted.Add(1)
				break
			}
		}
	case scheduling.BlockRemoved:
		m := ix.medium(ev.Medium)
		if m < 0 {
			ix.otherMedium.Add(1)
			return
		}
		for _, h := range ev.BlockHashes {
			if !ix.remove(e, h, m) {
				ix.unknownRemoved.Add(1)
			}
		}
	case scheduling.AllBlocksCleared:
		m := -1 // every medium
		if ev.Medium != "" {
			if m = ix.medium(ev.Medium); m < 0 {
				ix.otherMedium.Add(1)
				return
			}
		}
		for h, b := range e.blocks {
			for mi, c := range b.counts {
				if m >= 0 && mi != m {
					continue
				}
				for range c {
					ix.remove(e, h, mi)
				}
			}
		}
	default:
		ix.badEvents.Add(1)
	}
}

// store records one more copy of engine hash h (key k) in medium m on e. e.mu is held.
func (ix *Index) store(e *endpoint, h, k uint64, m int) {
	b, ok := e.blocks[h]
	if ok && b.key != k {
		// The engine reuses a hash for other tokens (a collision, or a foreign feed): the newest
		// event wins.
		for mi, c := range b.counts {
			for range c {
				ix.remove(e, h, mi)
			}
		}
		b, ok = engBlock{}, false
	}
	if b.counts[m] == maxCount {
		return
	}
	b.key = k
	b.counts[m]++
	e.blocks[h] = b
	ix.update(k, e.id, m, +1)
}

// remove drops one copy of engine hash h in medium m from e; false when e holds none. e.mu is
// held.
func (ix *Index) remove(e *endpoint, h uint64, m int) bool {
	b, ok := e.blocks[h]
	if !ok || b.counts[m] == 0 {
		return false
	}
	b.counts[m]--
	if b.counts == ([maxMedia]uint16{}) {
		delete(e.blocks, h)
	} else {
		e.blocks[h] = b
	}
	ix.update(b.key, e.id, m, -1)
	return true
}

// update adds delta (+1 or -1) to the copies of key k that endpoint ep holds in medium m.
func (ix *Index) update(k uint64, ep uint16, m, delta int) {
	add := func(h *holder) {
		switch c := int(h.counts[m]) + delta; {
		case c < 0:
		case c > maxCount:
		default:
			h.counts[m] = uint16(c)
		}
	}
	s := &ix.shards[k&(numShards-1)]
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.one.get(k)
	h := unpack(v)
	switch {
	case !ok:
		if delta > 0 {
			h = holder{ep: ep}
			add(&h)
			s.one.put(k, pack(h))
		}
	case h.ep == ep:
		add(&h)
		if h.counts == ([maxMedia]uint16{}) {
			s.one.del(k)
		} else {
			s.one.put(k, pack(h))
		}
	case h.ep != multiEP: // held by another endpoint alone
		if delta > 0 {
			nh := holder{ep: ep}
			add(&nh)
			s.multi[k] = &entry{holders: []holder{h, nh}}
			s.one.put(k, pack(holder{ep: multiEP}))
		}
	default:
		en := s.multi[k]
		i := slices.IndexFunc(en.holders, func(h holder) bool { return h.ep == ep })
		if i < 0 {
			if delta < 0 {
				return
			}
			en.holders = append(en.holders, holder{ep: ep})
			i = len(en.holders) - 1
		}
		add(&en.holders[i])
		ix.setBits(en, en.holders[i])
		if en.holders[i].counts == ([maxMedia]uint16{}) {
			en.holders = slices.Delete(en.holders, i, i+1)
		}
		switch {
		case len(en.holders) == 1:
			s.one.put(k, pack(en.holders[0]))
			delete(s.multi, k)
		case len(en.holders) <= narrowHolders:
			en.bits = nil
		}
	}
}

// setBits brings en's bitsets in line with h (its holder for one endpoint), creating them when
// en has become wide. The shard's lock is held.
func (ix *Index) setBits(en *entry, h holder) {
	segs := 1 + len(ix.media)
	if en.bits == nil {
		if len(en.holders) < wideHolders {
			return
		}
		maxEP := 0
		for _, x := range en.holders {
			maxEP = max(maxEP, int(x.ep))
		}
		en.bits = make([]uint64, segs*(maxEP/64+1))
		for _, x := range en.holders {
			ix.setBits(en, x)
		}
		return
	}
	w := len(en.bits) / segs
	if need := int(h.ep)/64 + 1; need > w {
		grown := make([]uint64, segs*need)
		for seg := range segs {
			copy(grown[seg*need:], en.bits[seg*w:(seg+1)*w])
		}
		en.bits, w = grown, need
	}
	word, bit := int(h.ep)/64, uint64(1)<<(h.ep%64)
	set := func(seg int, on bool) {
		if on {
			en.bits[seg*w+word] |= bit
		} else {
			en.bits[seg*w+word] &^= bit
		}
	}
	set(0, h.counts != [maxMedia]uint16{})
	for m := range ix.media {
		set(1+m, h.counts[m] > 0)
	}
}

// Score writes to scores[i] the prefix-cache score of the endpoint named names[i] for a request
// whose block keys are keys (from Keys): the longest run of leading blocks the endpoint holds in
// any tracked medium, each block counted with the weight of the best medium holding it, divided
// by len(keys); in [0,1]. No keys, or an endpoint the index never heard of, scores 0. len(scores)
// must equal len(names). Score takes no lock that events hold for long: one shard read lock per
// looked-up block.
func (ix *Index) Score(keys []uint64, names []string, scores []float64) {
	clear(scores)
	if len(keys) == 0 || len(names) == 0 {
		return
	}
	// slot[id] = candidate index + 1 (0: not a candidate); alive is the bitset of candidate ids
	// that held every block so far; run[j] is where candidate j's run ended; deficit[j] sums
	// 1 - weight over its blocks held in a lower tier only.
	var (
		slotA  [256]int32
		aliveA [4]uint64
		runA   [256]int32
		defA   [256]float64
	)
	ix.epMu.RLock()
	nIDs := len(ix.eps)
	slot, alive := slotA[:0], aliveA[:0]
	if nIDs <= len(slotA) {
		slot, alive = slotA[:nIDs], aliveA[:(nIDs+63)/64]
	} else {
		slot, alive = make([]int32, nIDs), make([]uint64, (nIDs+63)/64)
	}
	any := false
	for j, name := range names {
		if e := ix.eps[name]; e != nil {
			slot[e.id] = int32(j + 1)
			alive[e.id/64] |= 1 << (e.id % 64)
			any = true
		}
	}
	ix.epMu.RUnlock()
	if !any {
		return
	}
	run, deficit := runA[:0], defA[:0]
	if len(names) <= len(runA) {
		run, deficit = runA[:len(names)], defA[:len(names)]
	} else {
		run, deficit = make([]int32, len(names)), make([]float64, len(names))
	}
	for _, j := range slot {
		if j > 0 {
			run[j-1] = int32(len(keys)) // until dropped
		}
	}
	segs := 1 + len(ix.media)
	var nextA [4]uint64
	next := nextA[:0]
	if len(alive) <= len(nextA) {
		next = nextA[:len(alive)]
	} else {
		next = make([]uint64, len(alive))
	}
	for i, k := range keys {
		s := &ix.shards[k&(numShards-1)]
		clear(next)
		s.mu.RLock()
		v, ok := s.one.get(k)
		h := unpack(v)
		var en *entry
		if ok && h.ep == multiEP {
			en = s.multi[k]
		}
		switch {
		case !ok:
		case en == nil:
			ix.hold(h, alive, next, slot, deficit)
		case en.bits != nil:
			w := len(en.bits) / segs
			for x := range min(w, len(next)) {
				next[x] = alive[x] & en.bits[x]
			}
			// Endpoints whose best medium weighs less than 1 owe a deficit.
			for m, wt := range ix.weights {
				if wt >= 1 {
					continue
				}
				for x := range min(w, len(next)) {
					low := next[x] & en.bits[(1+m)*w+x]
					for mb := range ix.weights {
						if ix.weights[mb] > wt {
							low &^= en.bits[(1+mb)*w+x]
						}
					}
					for ; low != 0; low &= low - 1 {
						id := x*64 + bits.TrailingZeros64(low)
						deficit[slot[id]-1] += 1 - wt
					}
				}
			}
		default:
			for _, h := range en.holders {
				ix.hold(h, alive, next, slot, deficit)
			}
		}
		s.mu.RUnlock()
		left := false
		for x := range alive {
			for gone := alive[x] &^ next[x]; gone != 0; gone &= gone - 1 {
				run[slot[x*64+bits.TrailingZeros64(gone)]-1] = int32(i)
			}
			alive[x] = next[x]
			left = left || next[x] != 0
		}
		if !left {
			break
		}
	}
	for j := range names {
		if run[j] > 0 {
			scores[j] = (float64(run[j]) - deficit[j]) / float64(len(keys))
		}
	}
}

// Run returns how many leading blocks of keys the endpoint named name holds in any tracked
// medium (0 for an endpoint the index never heard of).
func (ix *Index) Run(keys []uint64, name string) int {
	e := ix.endpoint(name, false)
	if e == nil {
		return 0
	}
	for i, k := range keys {
		s := &ix.shards[k&(numShards-1)]
		s.mu.RLock()
		v, ok := s.one.get(k)
		h := unpack(v)
		held := ok && h.ep == e.id
		if ok && h.ep == multiEP {
			held = slices.ContainsFunc(s.multi[k].holders, func(h holder) bool { return h.ep == e.id })
		}
		s.mu.RUnlock()
		if !held {
			return i
		}
	}
	return len(keys)
}

// hold marks h's endpoint in next when it is alive, charging its deficit.
func (ix *Index) hold(h holder, alive, next []uint64, slot []int32, deficit []float64) {
	x, bit := int(h.ep)/64, uint64(1)<<(h.ep%64)
	if x >= len(alive) || alive[x]&bit == 0 {
		return
	}
	next[x] |= bit
	wt := 0.0
	for m, c := range h.counts[:len(ix.weights)] {
		if c > 0 {
			wt = max(wt, ix.weights[m])
		}
	}
	deficit[slot[h.ep]-1] += 1 - wt
}

// EngineHashes returns the engine block hashes the endpoint named name holds in medium, with the
// number of copies of each (the shape of vllm.BlockSet.Counts and sim's CachedBlockHashes), for
// tests and diagnostics.
func (ix *Index) EngineHashes(name, medium string) map[uint64]int {
	out := map[uint64]int{}
	e := ix.endpoint(name, false)
	m := ix.medium(medium)
	if e == nil || m < 0 {
		return out
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for h, b := range e.blocks {
		if b.counts[m] > 0 {
			out[h] = int(b.counts[m])
		}
	}
	return out
}

// Stats returns the index's counters. It locks every shard in turn.
func (ix *Index) Stats() Stats {
	st := Stats{
		Orphans: ix.orphans.Load(), UnknownRemoved: ix.unknownRemoved.Load(), BadEvents: ix.badEvents.Load(),
		OtherMedium: ix.otherMedium.Load(), Evicted: ix.evicted.Load(),
	}
	for i := range ix.shards {
		s := &ix.shards[i]
		s.mu.RLock()
		st.Keys += s.one.n
		s.mu.RUnlock()
	}
	ix.epMu.RLock()
	eps := make([]*endpoint, 0, len(ix.eps))
	for _, e := range ix.eps {
		eps = append(eps, e)
	}
	ix.epMu.RUnlock()
	for _, e := range eps {
		e.mu.Lock()
		st.Blocks += len(e.blocks)
		e.mu.Unlock()
	}
	return st
}
