package sim

import "encoding/binary"

// The paged KV cache with prefix caching, after vLLM V1 (vllm/v1/core/block_pool.py,
// vllm/v1/core/kv_cache_utils.py FreeKVCacheBlockQueue, vllm/v1/core/single_type_kv_cache_manager.py):
//
//   - numBlocks blocks of blockSize tokens; block 0 is the null block and is never handed out, so
//     usage is measured over numBlocks-1 blocks, as vLLM's BlockPool.get_usage does;
//   - a block is referenced by every running request whose block table holds it (refCnt);
//   - a full block is cached under its BlockHash once its tokens are computed, and stays cached
//     after its requests finish, in the free queue, until it is handed out again (evicted);
//   - the free queue is ordered least recently freed first: allocation pops its head, freeing
//     appends at its tail, and a prefix hit on a free block takes it out of the queue ("touch");
//   - a request frees its blocks tail first, so the ends of prompts are evicted before their
//     shared beginnings;
//   - identical blocks computed twice are both cached (vLLM does not de-duplicate so that block
//     tables stay append-only); lookups return the first.

type block struct {
	id     int
	refCnt int
	hash   BlockHash
	hashed bool
	// dup links the blocks cached under the same key (the same hash computed twice, or, in
	// theory, a 64-bit key collision), oldest first.
	dup *block
	// free-queue links; inFree says whether the block is in the queue.
	prev, next *block
	inFree     bool
}

type kvCache struct {
	blockSize int
	blocks    []block
	null      *block
	// head is the sentinel of the circular free queue: head.next is the next block handed out.
	head    block
	numFree int
	// cached maps a hash's key (hashKey) to the first of its cached blocks.
	cached map[uint64]*block
	// distinct is the number of distinct cached hashes.
	distinct int
	// rec records prefix-cache changes as KV events (nil records nothing).
	rec *eventRecorder
}

func newKVCache(numBlocks, blockSize int) *kvCache {
	c := &kvCache{blockSize: blockSize, blocks: make([]block, numBlocks), cached: make(map[uint64]*block, numBlocks)}
	c.head.prev, c.head.next = &c.head, &c.head
	for i := range c.blocks {
		c.blocks[i].id = i
		c.pushBack(&c.blocks[i])
	}
	// vLLM: "To represent a placeholder block with block_id=0" the pool pops one block at start.
	c.null = c.popFront()
	return c
}

func (c *kvCache) pushBack(b *block) {
	last := c.head.prev
	b.prev, b.next = last, &c.head
	last.next = b
	c.head.prev = b
	b.inFree = true
	c.numFree++
}

func (c *kvCache) remove(b *block) {
	b.prev.next = b.next
	b.next.prev = b.prev
	b.prev, b.next = nil, nil
	b.inFree = false
	c.numFree--
}

func (c *kvCache) popFront() *block {
	b := c.head.next
	if b == &c.head {
		return nil
	}
	c.remove(b)
	return b
}

// total is the number of usable blocks (the null block excluded).
func (c *kvCache) total() int { return len(c.blocks) - 1 }

// usage is vLLM's kv_cache_usage: the fraction of usable blocks referenced by requests. Cached
// blocks in the free queue count as free, since they are evictable.
func (c *kvCache) usage() float64 {
	if c.total() == 0 {
		return 0
	}
	return 1 - float64(c.numFree)/float64(c.total())
}

// lookup appends to dst the longest run of cached blocks matching hashes from the start, at
// most maxBlocks long (vLLM find_longest_cache_hit).
func (c *kvCache) lookup(hashes []BlockHash, maxBlocks int, dst []*block) []*block {
	for i := 0; i < len(hashes) && i < maxBlocks; i++ {
		b := c.find(hashes[i])
		if b == nil {
			break
		}
		dst = append(dst, b)
	}
	return dst
}

// canAllocate reports whether n new blocks can be handed out after touching hits: hit blocks
// that sit in the free queue stop being free, so they count against it (vLLM allocate_slots).
func (c *kvCache) canAllocate(n int, hits []*block) bool {
	evictable := 0
	for _, b := range hits {
		if b.refCnt == 0 {
			evictable++
		}
	}
	return n+evictable <= c.numFree
}

// touch takes a reference on each hit block, taking free ones out of the free queue.
func (c *kvCache) touch(hits []*block) {
	for _, b := range hits {
		if b.refCnt == 0 && b.inFree {
			c.remove(b)
		}
		b.refCnt++
	}
}

// allocate appends to dst n blocks from the head of the free queue, evicting their cached
// hashes. The caller checks canAllocate first; allocate appends nothing if there are not enough.
func (c *kvCache) allocate(n int, dst []*block) []*block {
	if n > c.numFree {
		return dst
	}
	for range n {
		b := c.popFront()
		c.evict(b)
		b.refCnt = 1
		dst = append(dst, b)
	}
	return dst
}

// evict drops b's hash from the prefix cache, if it has one.
func (c *kvCache) evict(b *block) {
	if !b.hashed {
		return
	}
	c.rec.removed(b.hash) // vLLM _maybe_evict_cached_block: one BlockRemoved per block
	k := hashKey(b.hash)
	first := c.cached[k]
	if first == b {
		if b.dup == nil {
			delete(c.cached, k)
		} else {
			c.cached[k] = b.dup
		}
	} else {
		for x := first; x != nil; x = x.dup {
			if x.dup == b {
				x.dup = b.dup
				break
			}
		}
	}
	b.dup = nil
	b.hashed = false
	b.hash = BlockHash{}
}

// cache registers a full block under h; false if b was already cached.
func (c *kvCache) cache(b *block, h BlockHash) bool {
	if b.hashed {
		return false
	}
	b.hash, b.hashed = h, true
	k := hashKey(h)
	first := c.cached[k]
	if first == nil {
		c.cached[k] = b
		return true
	}
	last := first
	for last.dup != nil {
		last = last.dup
	}
	last.dup = b
	return true
}

// reset drops every cached hash, as vLLM's BlockPool.reset_prefix_cache: only when no block
// is referenced (false otherwise, nothing changes). It records AllBlocksCleared.
func (c *kvCache) reset() bool {
	if c.numFree != c.total() {
		return false
	}
	for i := range c.blocks {
		c.blocks[i].hashed, c.blocks[i].hash, c.blocks[i].dup = false, BlockHash{}, nil
	}
	clear(c.cached)
	c.rec.cleared()
	return true
}

// cachedHashes returns the distinct hashes in the prefix cache, with the number of blocks
// cached under each (for tests and KV-event reconciliation).
func (c *kvCache) cachedHashes() map[BlockHash]int {
	out := make(map[BlockHash]int, len(c.cached))
	for _, first := range c.cached {
		for b := first; b != nil; b = b.dup {
			out[b.hash]++
		}
	}
	return out
}

// free drops one reference on each block, in order; blocks reaching zero join the tail of the
// free queue (cached ones stay findable until evicted). Pass a request's blocks tail first.
func (c *kvCache) free(blocks []*block) {
	for _, b := range blocks {
		if b == c.null {
			continue
		}
		b.refCnt--
		if b.refCnt == 0 {
			c.pushBack(b)
		}
	}
}

// numCachedBlocks is the number of distinct hashes in the prefix cache (for tests).
func (c *kvCache) numCachedBlocks() int { return len(c.cachedHashes()) }

// hashKey is the map key of a hash: its first 8 bytes (the digest is uniform).
func hashKey(h BlockHash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// find returns the first block cached under h, or nil.
func (c *kvCache) find(h BlockHash) *block {
	for b := c.cached[hashKey(h)]; b != nil; b = b.dup {
		if b.hash == h {
			return b
		}
	}
	return nil
}
