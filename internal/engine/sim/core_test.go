package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

type coreHarness struct {
	t   *testing.T
	c   *Engine
	now time.Time
}

// newTestEngine is an H100 Llama-3.1-8B engine of numBlocks blocks (the null block included)
// with max_model_len as large as the cache allows, and a token budget of budget.
func newTestEngine(t testing.TB, numBlocks, blockSize, maxSeqs, budget int) *Engine {
	e, err := NewEngine(config.Sim{Model: "llama-3.1-8b", GPU: "H100-SXM", NumGPUBlocks: numBlocks, BlockSize: blockSize,
		MaxNumSeqs: maxSeqs, MaxModelLen: (numBlocks - 1) * blockSize}, "test")
	require.NoError(t, err)
	e.maxBatchedTokens = budget
	return e
}

func newCoreHarness(t *testing.T, numBlocks, blockSize, maxSeqs, budget int) *coreHarness {
	return &coreHarness{t: t, now: time.Unix(1000, 0), c: newTestEngine(t, numBlocks, blockSize, maxSeqs, budget)}
}

// seq makes a sequence with prompt tokens base, base+1, ... and out planned output tokens.
func seqOf(id string, prompt []int, out int) *sequence {
	o := make([]int, out)
	for i := range o {
		o[i] = 50000 + i
	}
	return newSequence(id, prompt, o, finishLength, make(chan struct{}, 1))
}

func tokensFrom(base, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = base + i
	}
	return out
}

func (h *coreHarness) add(seqs ...*sequence) {
	for _, s := range seqs {
		h.c.add(s, h.now)
	}
}

// step runs one schedule+complete; it reports whether there was work.
func (h *coreHarness) step() bool {
	st, ok := h.c.Schedule(h.now)
	if !ok {
		return false
	}
	h.now = st.End
	h.c.Complete()
	return true
}

func (h *coreHarness) runIdle() int {
	steps := 0
	for !h.c.idle() {
		require.True(h.t, h.step(), "the core has work but schedules nothing")
		steps++
		require.Less(h.t, steps, 100000)
	}
	return steps
}

func TestCorePrefixCacheHits(t *testing.T) {
	const bs = 16
	prompt := tokensFrom(1, 100)
	for _, tc := range []struct {
		name   string
		prompt []int
		want   int
	}{
		{"identical prompt: full blocks of all but the last token", prompt, 96},
		{"shared 40-token prefix: 2 full blocks", append(tokensFrom(1, 40), tokensFrom(7000, 30)...), 32},
		{"shared 15 tokens: less than a block", append(tokensFrom(1, 15), tokensFrom(7000, 80)...), 0},
		{"prompt of exactly 4 blocks: the last token is recomputed, so 3 blocks", tokensFrom(1, 64), 48},
		{"different first token: miss", append([]int{9}, prompt[1:]...), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newCoreHarness(t, 64, bs, 8, 8192)
			h.add(seqOf("a", prompt, 3))
			h.runIdle()
			b := seqOf("b", tc.prompt, 3)
			h.add(b)
			h.runIdle()
			require.Equal(t, tc.want, b.numCachedTokens)
			require.Zero(t, b.numCachedTokens%bs)
			require.Equal(t, 0.0, h.c.kv.usage(), "finished requests hold no blocks")
		})
	}
}

// TestCoreGeneratedTokensCached: the blocks of generated tokens are cached too, so a follow-up
// whose prompt is the first prompt plus its answer hits past the first prompt.
func TestCoreGeneratedTokensCached(t *testing.T) {
	h := newCoreHarness(t, 64, 16, 8, 8192)
	a := seqOf("a", tokensFrom(1, 40), 30) // 70 tokens, 69 computed: 4 full blocks
	h.add(a)
	h.runIdle()
	b := seqOf("b", append(append(append([]int{}, a.prompt...), a.output...), tokensFrom(9000, 10)...), 2)
	h.add(b)
	h.runIdle()
	require.Equal(t, 64, b.numCachedTokens)
	require.Greater(t, b.numCachedTokens, a.promptLen)
}

func TestCoreStatsAndOutputs(t *testing.T) {
	h := newCoreHarness(t, 64, 16, 8, 8192)
	a := seqOf("a", tokensFrom(1, 50), 5)
	h.add(a)
	h.step()
	require.Equal(t, 50, h.c.stats.prefixQueries)
	require.Equal(t, 0, h.c.stats.prefixHits)
	require.Equal(t, 50, h.c.stats.promptTokens, "prompt tokens count when the first token is out")
	require.Equal(t, 1, h.c.stats.generationTokens)
	require.Len(t, h.c.stats.ttft, 1)
	gen, itl := 0, 0
	var finished []finishedStats
	for !h.c.idle() {
		require.True(t, h.step())
		gen += h.c.stats.generationTokens
		itl += len(h.c.stats.itl)
		finished = append(finished, h.c.stats.finished...)
	}
	require.Equal(t, 4, gen)
	require.Equal(t, 4, itl)
	require.Equal(t, []finishedStats{{reason: finishLength, promptTokens: 50, outputTokens: 5}}, finished)
	require.EqualValues(t, 5, h.c.Stats().GenerationTokens)
	v := a.progress.view()
	require.True(t, v.finished)
	require.Equal(t, 5, v.generated)
	require.Equal(t, finishLength, v.reason)
}

func TestCoreMaxNumSeqs(t *testing.T) {
	h := newCoreHarness(t, 64, 16, 2, 8192)
	h.add(seqOf("a", tokensFrom(1, 20), 4), seqOf("b", tokensFrom(100, 20), 4), seqOf("c", tokensFrom(200, 20), 4))
	h.step()
	require.Len(t, h.c.running, 2)
	require.Len(t, h.c.waiting, 1, "the third request waits for a seq slot")
	h.runIdle()
}

// TestCoreWaitsForBlocks: the waiting queue's head waits until blocks free up (FIFO).
func TestCoreWaitsForBlocks(t *testing.T) {
	h := newCoreHarness(t, 9, 16, 8, 8192) // 8 usable blocks
	a := seqOf("a", tokensFrom(1, 100), 2) // 7 blocks
	b := seqOf("b", tokensFrom(1000, 40), 2)
	h.add(a, b)
	h.step()
	require.Equal(t, []*sequence{a}, h.c.running)
	require.Equal(t, []*sequence{b}, h.c.waiting)
	h.runIdle()
	require.True(t, b.progress.view().finished)
}

// TestCorePreemption: when running requests outgrow the KV cache, the last one is preempted,
// recomputed later, and still produces its whole planned output.
func TestCorePreemption(t *testing.T) {
	h := newCoreHarness(t, 9, 4, 8, 8192) // 8 usable blocks of 4 tokens
	a := seqOf("a", tokensFrom(1, 8), 12)
	b := seqOf("b", tokensFrom(100, 8), 12)
	h.add(a, b)
	h.runIdle()
	require.Positive(t, b.preemptions+a.preemptions)
	for _, s := range []*sequence{a, b} {
		v := s.progress.view()
		require.True(t, v.finished)
		require.Equal(t, 12, v.generated)
	}
	require.Equal(t, 0.0, h.c.kv.usage())
}

// TestCoreChunkedPrefill: a prompt longer than the token budget is prefilled over several steps,
// and its first token comes after the last chunk.
func TestCoreChunkedPrefill(t *testing.T) {
	h := newCoreHarness(t, 64, 16, 8, 64)
	a := seqOf("a", tokensFrom(1, 150), 2)
	h.add(a)
	for i := 0; i < 2; i++ {
		h.step()
		require.Zero(t, a.numOut, "no token before the prompt is computed")
	}
	h.step()
	require.Equal(t, 1, a.numOut)
	require.Equal(t, 150, a.numComputed)
}

// TestCoreEvictsLeastRecentlyUsed: with room for about two prompts, the oldest one's blocks go first.
func TestCoreEvictsLeastRecentlyUsed(t *testing.T) {
	h := newCoreHarness(t, 17, 16, 8, 8192) // 16 usable blocks
	p1, p2, p3 := tokensFrom(1, 96), tokensFrom(1000, 96), tokensFrom(2000, 96)
	for i, p := range [][]int{p1, p2, p3} {
		h.add(seqOf(string(rune('a'+i)), p, 1))
		h.runIdle()
	}
	again1, again3 := seqOf("again1", p1, 1), seqOf("again3", p3, 1)
	h.add(again3)
	h.runIdle()
	h.add(again1)
	h.runIdle()
	require.Equal(t, 80, again3.numCachedTokens, "the newest prompt is still cached")
	require.Less(t, again1.numCachedTokens, 80, "the oldest prompt was evicted first")
}

func TestCoreAbort(t *testing.T) {
	h := newCoreHarness(t, 64, 16, 1, 8192)
	a, b := seqOf("a", tokensFrom(1, 40), 50), seqOf("b", tokensFrom(100, 40), 5)
	h.add(a, b)
	h.step()
	h.c.abort(b) // waiting: leaves at once
	require.Empty(t, h.c.waiting)
	require.Equal(t, finishAbort, b.progress.view().reason)
	h.c.abort(a) // running: dropped by the next schedule
	require.False(t, h.step())
	require.True(t, h.c.idle())
	require.Equal(t, 0.0, h.c.kv.usage())
	require.Equal(t, finishAbort, a.progress.view().reason)
}
