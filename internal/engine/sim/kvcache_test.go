package sim

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func hashesN(n int) []BlockHash {
	hs := make([]BlockHash, n)
	parent := NoneHash("0")
	for i := range hs {
		hs[i] = HashBlockTokens(parent, []int{i, i, i, i}, nil)
		parent = hs[i]
	}
	return hs
}

func TestKVCacheNullBlockAndUsage(t *testing.T) {
	c := newKVCache(5, 4)
	require.Equal(t, 4, c.total(), "block 0 is the null block")
	require.Equal(t, 0.0, c.usage())
	bs := c.allocate(2, nil)
	require.Len(t, bs, 2)
	require.NotContains(t, []int{bs[0].id, bs[1].id}, 0, "the null block is never handed out")
	require.Equal(t, 0.5, c.usage())
	require.Nil(t, c.allocate(3, nil), "only 2 blocks are left")
	c.free(bs)
	require.Equal(t, 0.0, c.usage())
}

func TestKVCachePrefixLookup(t *testing.T) {
	hs := hashesN(4)
	for _, tc := range []struct {
		name      string
		cached    int // leading hashes registered
		maxBlocks int
		want      int
	}{
		{"miss", 0, 4, 0},
		{"partial chain", 2, 4, 2},
		{"full chain", 4, 4, 4},
		{"capped by max blocks", 4, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newKVCache(9, 4)
			bs := c.allocate(4, nil)
			for i := 0; i < tc.cached; i++ {
				c.cache(bs[i], hs[i])
			}
			require.Len(t, c.lookup(hs, tc.maxBlocks, nil), tc.want)
		})
	}
	t.Run("a gap ends the hit", func(t *testing.T) {
		c := newKVCache(9, 4)
		bs := c.allocate(4, nil)
		c.cache(bs[0], hs[0])
		c.cache(bs[2], hs[2])
		require.Len(t, c.lookup(hs, 4, nil), 1)
	})
}

// TestKVCacheLRUEviction: freed cached blocks stay findable until handed out again; the free
// queue hands out the least recently freed first, and a request's tail before its head.
func TestKVCacheLRUEviction(t *testing.T) {
	c := newKVCache(7, 4) // 6 usable blocks
	hs := hashesN(3)
	a := c.allocate(3, nil)
	for i := range a {
		c.cache(a[i], hs[i])
	}
	rev := slices.Clone(a)
	slices.Reverse(rev)
	c.free(rev) // tail first, as a finishing request frees
	require.Equal(t, 6, c.numFree)
	require.Len(t, c.lookup(hs, 3, nil), 3, "cached blocks of a finished request are reusable")

	// The 3 never-used blocks are handed out first, then a's tail block.
	c.allocate(3, nil)
	require.Len(t, c.lookup(hs, 3, nil), 3)
	c.allocate(1, nil)
	require.Len(t, c.lookup(hs, 3, nil), 2, "the tail block was the least recently freed cached block")

	// A hit takes free blocks out of the queue, so they are not evicted.
	hits := c.lookup(hs, 3, nil)
	require.True(t, c.canAllocate(0, hits))
	require.False(t, c.canAllocate(1, hits), "touching 2 free blocks leaves 0 free")
	c.touch(hits)
	require.Equal(t, 0, c.numFree)
	require.Equal(t, 1, hits[0].refCnt)
	c.free(hits)
	require.Len(t, c.lookup(hs, 3, nil), 2)
}

func TestKVCacheDuplicateBlocks(t *testing.T) {
	c := newKVCache(5, 4)
	h := hashesN(1)[0]
	bs := c.allocate(2, nil)
	c.cache(bs[0], h)
	c.cache(bs[1], h) // the same block computed twice: both cached, as vLLM does
	c.free([]*block{bs[0], bs[1]})
	c.allocate(2, nil) // the two never-used blocks
	c.allocate(1, nil) // evicts bs[0]
	require.Len(t, c.lookup([]BlockHash{h}, 1, nil), 1, "the duplicate still serves the hash")
	c.allocate(1, nil)
	require.Empty(t, c.lookup([]BlockHash{h}, 1, nil))
	require.Equal(t, 0, c.numCachedBlocks())
}
