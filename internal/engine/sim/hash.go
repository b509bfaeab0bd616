package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// BlockHash is vLLM's prefix-cache key of one full KV block: the 32-byte SHA-256 digest of
// sha256_cbor (vllm/utils/hashing.py sha256_cbor, vllm/v1/core/kv_cache_utils.py
// hash_block_tokens). A block's hash covers its tokens and, through the parent hash, every token
// before it, so equal hashes mean equal prefixes.
type BlockHash [32]byte

// Uint64 is the hash as vLLM publishes it in KV events (vllm/distributed/kv_events.py): the last
// 8 bytes of the digest read as a big-endian uint64.
func (h BlockHash) Uint64() uint64 { return binary.BigEndian.Uint64(h[24:]) }

// String is the hex digest.
func (h BlockHash) String() string { return hex.EncodeToString(h[:]) }

// DefaultHashSeed is the seed of NONE_HASH: vLLM uses $PYTHONHASHSEED (random bytes when unset);
// the simulator behaves like a vLLM started with PYTHONHASHSEED=0, so its hashes are reproducible
// and comparable with a real replica configured the same way.
const DefaultHashSeed = "0"

// encMode is CBOR in the core deterministic encoding (RFC 8949 §4.2.1), which is what Python's
// cbor2.dumps(..., canonical=True) produces for the values hashed here.
var encMode = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(fmt.Sprintf("sim: cbor encoding mode: %v", err)) // static options: cannot fail
	}
	return m
}()

// sha256CBOR is vLLM's sha256_cbor: SHA-256 of the canonical CBOR encoding of v.
func sha256CBOR(v any) BlockHash {
	b, err := encMode.Marshal(v)
	if err != nil {
		// Only strings, byte strings, ints, nil and arrays of them are hashed here.
		panic(fmt.Sprintf("sim: cbor: %v", err))
	}
	return sha256.Sum256(b)
}

// NoneHash is vLLM's NONE_HASH for seed: sha256_cbor(seed), the parent of a request's first block.
func NoneHash(seed string) BlockHash { return sha256CBOR(seed) }

// blockKey is the tuple vLLM hashes: (parent_block_hash, tuple(curr_block_token_ids), extra_keys).
type blockKey struct {
	_      struct{} `cbor:",toarray"`
	Parent []byte
	Tokens []int
	Extra  []any // nil encodes as CBOR null, like Python's None
}

// HashBlockTokens is vLLM's hash_block_tokens with sha256_cbor: the hash of one full block of
// tokens whose predecessor block hashed to parent (noneHash for the first block). extra holds
// the block's extra keys (a LoRA adapter name, a cache salt, ...) or nil for none.
func HashBlockTokens(parent BlockHash, tokens []int, extra []any) BlockHash {
	if len(extra) == 0 {
		extra = nil // vLLM: extra_keys is None when there are none
	}
	return sha256CBOR(blockKey{Parent: parent[:], Tokens: tokens, Extra: extra})
}

// hashBlock is HashBlockTokens for a block whose extra keys are nil (lora "") or the adapter
// name alone, without reflection or allocation: it writes the canonical CBOR of
// [parent, tokens, extra] into buf (returned for reuse) and hashes it. It equals
// HashBlockTokens(parent, tokens, []any{lora}) (nil for "") byte for byte (hash_test.go).
func hashBlock(buf []byte, parent BlockHash, tokens []int, lora string) (BlockHash, []byte) {
	buf = append(buf[:0], 0x83, 0x58, 0x20) // array(3), bytes(32)
	buf = append(buf, parent[:]...)
	buf = cborHead(buf, 4, uint64(len(tokens)))
	for _, t := range tokens {
		if t >= 0 {
			buf = cborHead(buf, 0, uint64(t))
		} else {
			buf = cborHead(buf, 1, uint64(-1-t))
		}
	}
	if lora == "" {
		buf = append(buf, 0xf6) // null
	} else {
		buf = append(buf, 0x81) // array(1)
		buf = cborHead(buf, 3, uint64(len(lora)))
		buf = append(buf, lora...)
	}
	return sha256.Sum256(buf), buf
}

// cborHead appends a CBOR head of major type major and argument v in its shortest form (RFC
// 8949 §3, as the core deterministic encoding requires).
func cborHead(buf []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(buf, m|byte(v))
	case v <= 0xff:
		return append(buf, m|24, byte(v))
	case v <= 0xffff:
		return append(buf, m|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(buf, m|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return binary.BigEndian.AppendUint64(append(buf, m|27), v)
}
