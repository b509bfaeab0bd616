package scheduling

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"

	"github.com/cespare/xxhash/v2"
	lru "github.com/hashicorp/golang-lru/v2"
)

var (
	_ Scorer     = (*PrefixScorer)(nil)
	_ PreRequest = (*PrefixScorer)(nil)
)

const prefixStateKey = "prefix-cache-scorer"

// PrefixScorer is the approximate prefix-cache scorer (llm-d's "prefix-cache-scorer" in
// approximate mode): it remembers which prompt blocks each endpoint was sent, as a stand-in for
// the engine's real KV cache, and prefers the endpoint holding the longest prefix of the prompt.
//
// The prompt is cut into blocks of BlockChars bytes; a block never crosses a part boundary
// (Request.PromptParts, one per chat message), so the last, shorter block of a message hashes the
// same in every later turn of the conversation. Block hashes are chained (xxhash64 of the previous
// block's hash and the block's bytes), so one block hash stands for the whole prefix up to it, as
// vLLM's prefix-cache block hashes do (vllm/v1/core/kv_cache_utils.py, hash_block_tokens).
//
//	score = longest run of leading blocks found on the endpoint / blocks in the prompt
//
// Each endpoint has an LRU of LRUBlocks hashes (github.com/hashicorp/golang-lru/v2). After a
// pick, the chosen endpoint learns every block of the request, the last block first so that the
// prompt's head is the most recently used, mirroring vLLM, which evicts a sequence's tail blocks
// before its head.
//
// With a tokenizer (NewPrefixScorerTokens) the blocks are the prompt's full blocks of
// blockTokens token ids (PromptTokens: the engine's view of the prompt), hashed the same way
// over their little-endian 32-bit ids: closer to vLLM's own blocks than bytes, at the cost of
// tokenizing each request once. Requests without a full block of tokens (no messages, no prompt,
// or a very short one) fall back to character blocks.
type PrefixScorer struct {
	blockChars  int
	lruBlocks   int
	tok         Tokenizer
	blockTokens int

	mu     sync.RWMutex
	caches map[string]*lru.Cache[uint64, struct{}]
}

// NewPrefixScorer returns a prefix scorer with blocks of blockChars bytes and lruBlocks block
// hashes remembered per endpoint; both must be positive.
func NewPrefixScorer(blockChars, lruBlocks int) (*PrefixScorer, error) {
	if blockChars < 1 || lruBlocks < 1 {
		return nil, fmt.Errorf("prefix scorer: block chars (%d) and LRU blocks (%d) must be positive", blockChars, lruBlocks)
	}
	return &PrefixScorer{blockChars: blockChars, lruBlocks: lruBlocks, caches: map[string]*lru.Cache[uint64, struct{}]{}}, nil
}

// NewPrefixScorerTokens returns a prefix scorer that cuts prompts tokenized by tok into blocks
// of blockTokens tokens (character blocks of blockChars bytes when a request has no prompt
// tokens); lruBlocks block hashes are remembered per endpoint. All sizes must be positive and
// tok non-nil.
func NewPrefixScorerTokens(tok Tokenizer, blockTokens, blockChars, lruBlocks int) (*PrefixScorer, error) {
	if tok == nil || blockTokens < 1 {
		return nil, fmt.Errorf("prefix scorer: a tokenizer and positive block tokens (%d) are required", blockTokens)
	}
	p, err := NewPrefixScorer(blockChars, lruBlocks)
	if err != nil {
		return nil, err
	}
	p.tok, p.blockTokens = tok, blockTokens
	return p, nil
}

// Name returns "prefix-cache-scorer".
func (p *PrefixScorer) Name() string { return "prefix-cache-scorer" }

// Score implements Scorer. A prompt with no block (empty) scores 0 everywhere.
func (p *PrefixScorer) Score(req *Request, eps []*Endpoint, scores []float64) {
	hashes := p.hashes(req)
	if len(hashes) == 0 {
		return
	}
	for i, e := range eps {
		if c := p.cache(e.Name); c != nil {
			scores[i] = float64(matched(c, hashes)) / float64(len(hashes))
		}
	}
}

// matched returns how many leading blocks of hashes c holds. It binary-searches, which is exact
// because along one chain the blocks present always form a prefix: PreRequest adds a request's
// blocks tail first, so block i is touched whenever block i+1 is, and later; the LRU therefore
// evicts block i+1 before block i. O(log n) lookups instead of n per endpoint.
func matched(c *lru.Cache[uint64, struct{}], hashes []uint64) int {
	return sort.Search(len(hashes), func(i int) bool { return !c.Contains(hashes[i]) })
}

// PreRequest records the request's blocks on the chosen endpoint.
func (p *PrefixScorer) PreRequest(req *Request, picked *Endpoint) {
	hashes := p.hashes(req)
	if len(hashes) == 0 {
		return
	}
	c := p.cache(picked.Name)
	if c == nil {
		p.mu.Lock()
		if c = p.caches[picked.Name]; c == nil {
			c, _ = lru.New[uint64, struct{}](p.lruBlocks) // size checked in NewPrefixScorer
			p.caches[picked.Name] = c
		}
		p.mu.Unlock()
	}
	for i := len(hashes) - 1; i >= 0; i-- {
		c.Add(hashes[i], struct{}{})
	}
}

// Blocks returns how many blocks of prompt the endpoint named name holds, counted from the start
// (for tests and diagnostics).
func (p *PrefixScorer) Blocks(name string, req *Request) int {
	c := p.cache(name)
	if c == nil {
		return 0
	}
	return matched(c, p.hashes(req))
}

func (p *PrefixScorer) cache(name string) *lru.Cache[uint64, struct{}] {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.caches[name]
}

// hashes computes the request's block hashes once per request.
func (p *PrefixScorer) hashes(req *Request) []uint64 {
	if v, ok := req.Read(prefixStateKey); ok {
		return v.([]uint64)
	}
	var h []uint64
	if p.tok != nil {
		h = TokenBlockHashes(PromptTokens(req, p.tok), p.blockTokens)
	}
	if len(h) == 0 {
		h = BlockHashes(req.PromptParts, p.blockChars)
	}
	req.Write(prefixStateKey, h)
	return h
}

// BlockHashes cuts parts into blocks of at most blockChars bytes (a block never crosses a part
// boundary; empty parts are skipped) and returns their chained hashes: hash[i] =
// xxhash64(le64(hash[i-1]) || block[i]), with hash[-1] = 0.
func BlockHashes(parts []string, blockChars int) []uint64 {
	n := 0
	for _, s := range parts {
		n += (len(s) + blockChars - 1) / blockChars
	}
	out := make([]uint64, 0, n)
	var d xxhash.Digest
	var prev [8]byte
	var h uint64
	for _, s := range parts {
		for off := 0; off < len(s); off += blockChars {
			d.Reset()
			binary.LittleEndian.PutUint64(prev[:], h)
			_, _ = d.Write(prev[:])
			_, _ = d.WriteString(s[off:min(off+blockChars, len(s))])
			h = d.Sum64()
			out = append(out, h)
		}
	}
	return out
}

// TokenBlockHashes returns the chained hashes of the full blocks of blockTokens token ids in
// ids (a trailing partial block is left out, as vLLM caches full blocks only): hash[i] =
// xxhash64(le64(hash[i-1]) || le32(id)...), with hash[-1] = 0.
func TokenBlockHashes(ids []int, blockTokens int) []uint64 {
	n := len(ids) / blockTokens
	out := make([]uint64, 0, n)
	buf := make([]byte, 8+4*blockTokens)
	var h uint64
	for i := range n {
		binary.LittleEndian.PutUint64(buf, h)
		for j, t := range ids[i*blockTokens : (i+1)*blockTokens] {
			binary.LittleEndian.PutUint32(buf[8+4*j:], uint32(t))
		}
		h = xxhash.Sum64(buf)
		out = append(out, h)
	}
	return out
}
