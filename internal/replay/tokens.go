package replay

import (
	"encoding/binary"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// tokenSpace bounds the synthetic token ids: below Llama-3's first special token (128000,
// <|begin_of_text|>), so no id is BOS or EOS and every id is a valid token of the model.
const tokenSpace = 128000

// splitmix64 is the SplitMix64 finaliser (Steele, Lea, Flood: "Fast splittable pseudorandom
// number generators", OOPSLA 2014): a cheap, well-mixed hash of a counter.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// blockTokens appends n (<= MooncakeBlockTokens) tokens of the block named (space, id), from its
// start: the same (space, id) always yields the same tokens, and a shorter n is a prefix of a
// longer one, so a partial block is the head of the full block with that id, as in
// ../shared/data/README.md ("one deterministic 512-token block per hash id, the last block cut to
// fit input_length"). Space separates Mooncake ids (0) from blocks unique to a request.
func blockTokens(dst []int, space, id uint64, from, n int) []int {
	seed := splitmix64(space<<56 ^ id*0x100000001b3)
	for p := from; p < n; p++ {
		dst = append(dst, int(splitmix64(seed+uint64(p))%tokenSpace))
	}
	return dst
}

// Spaces of blockTokens.
const (
	spaceMooncake = 0
	spaceUnique   = 1 // ids: request index << 16 | block index
)

// streamTokens appends the tokens [from, to) of the block stream ids (one MooncakeBlockTokens
// block per id); past the last id, the stream continues with blocks unique to request i.
func streamTokens(dst []int, ids []int64, i int, from, to int) []int {
	for from < to {
		b, off := from/MooncakeBlockTokens, from%MooncakeBlockTokens
		n := min(MooncakeBlockTokens, off+to-from)
		if b < len(ids) {
			dst = blockTokens(dst, spaceMooncake, uint64(ids[b]), off, n)
		} else {
			dst = blockTokens(dst, spaceUnique, uint64(i)<<16|uint64(b), off, n)
		}
		from += n - off
	}
	return dst
}

// requestTokens returns row i's prompt followed by its planned answer, as token ids: the prompt
// one block per hash id (blocks unique to the row when it has none), the answer the stream's
// continuation through OutputHashIDs when the row has them, else unique to the row.
func requestTokens(r *Row, i int) []int {
	total := r.InputTokens + max(1, r.OutputTokens)
	out := make([]int, 0, total)
	switch {
	case r.HashIDs == nil:
		return streamTokens(out, nil, i, 0, total)
	case r.OutputHashIDs != nil:
		ids := append(r.HashIDs[:len(r.HashIDs):len(r.HashIDs)], r.OutputHashIDs...)
		return streamTokens(out, ids, i, 0, total)
	}
	out = streamTokens(out, r.HashIDs, i, 0, r.InputTokens)
	// The answer: blocks unique to the row (bit 15 apart from its unique prompt blocks).
	for from, b := r.InputTokens, 0; from < total; b++ {
		n := min(MooncakeBlockTokens, total-from)
		out = blockTokens(out, spaceUnique, uint64(i)<<16|1<<15|uint64(b), 0, n)
		from += n
	}
	return out
}

// promptParts renders a prompt for the router's approximate prefix scorer, which hashes text:
// each token as 4 bytes (its id, little-endian), the usual 4 characters per token, one part per
// Mooncake block so that parts line up with the hash ids (../shared/data/README.md). Two prompts
// share exactly the leading bytes their tokens share.
func promptParts(prompt []int) []string {
	buf := make([]byte, 4*len(prompt))
	for k, t := range prompt {
		binary.LittleEndian.PutUint32(buf[4*k:], uint32(t))
	}
	text := unsafe.String(unsafe.SliceData(buf), len(buf)) // buf is never written again
	parts := make([]string, 0, (len(prompt)+MooncakeBlockTokens-1)/MooncakeBlockTokens)
	for off := 0; off < len(text); off += 4 * MooncakeBlockTokens {
		parts = append(parts, text[off:min(off+4*MooncakeBlockTokens, len(text))])
	}
	return parts
}

// idealCache is one infinite prefix cache that sees every request, for the ideal hit ratio. It
// keys each Mooncake block by the chain hash of the ids up to it (equal chains mean equal
// prefixes) and remembers how many of its tokens were ever computed, prompt or answer.
type idealCache struct {
	seen      map[uint64]int
	blockSize int
}

func newIdealCache(blockSize int) *idealCache {
	return &idealCache{seen: map[uint64]int{}, blockSize: blockSize}
}

// hit returns the prompt tokens of r the cache holds: the leading tokens already computed, in
// whole engine blocks and never the last prompt token (vLLM), then records r's prompt and
// answer. Rows without hash ids are unique: 0.
func (c *idealCache) hit(r *Row) int {
	if r.HashIDs == nil {
		return 0
	}
	ids := r.HashIDs
	total := r.InputTokens
	if r.OutputHashIDs != nil {
		ids = append(ids[:len(ids):len(ids)], r.OutputHashIDs...)
		total += r.OutputTokens
	}
	var h uint64
	var buf [16]byte
	matched, still := 0, true
	for k, id := range ids {
		binary.LittleEndian.PutUint64(buf[0:], h)
		binary.LittleEndian.PutUint64(buf[8:], uint64(id))
		h = xxhash.Sum64(buf[:])
		if k*MooncakeBlockTokens < r.InputTokens && still {
			use := min(MooncakeBlockTokens, r.InputTokens-k*MooncakeBlockTokens)
			have := c.seen[h]
			matched += min(use, have)
			still = have >= use
		}
		c.seen[h] = max(c.seen[h], min(MooncakeBlockTokens, total-k*MooncakeBlockTokens))
	}
	return min(matched, r.InputTokens-1) / c.blockSize * c.blockSize
}
