package kvindex

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

const bs = 4

func newIndex(t testing.TB, maxBlocks int) *Index {
	t.Helper()
	ix, err := New(Config{BlockSize: bs, MaxBlocksPerEndpoint: maxBlocks,
		Media: []Medium{{Name: "GPU", Weight: 1}, {Name: "CPU", Weight: 0.5}}})
	require.NoError(t, err)
	return ix
}

// seq returns n tokens from start.
func seq(start, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = start + i
	}
	return out
}

// stored is a BlockStored of len(hashes) blocks of tokens, parented by parent when hasParent.
func stored(tokens []int, parent uint64, hasParent bool, hashes ...uint64) scheduling.KVEvent {
	return scheduling.KVEvent{Kind: scheduling.BlockStored, BlockHashes: hashes, ParentHash: parent, HasParent: hasParent,
		TokenIDs: tokens, BlockSize: bs}
}

func removed(medium string, hashes ...uint64) scheduling.KVEvent {
	return scheduling.KVEvent{Kind: scheduling.BlockRemoved, BlockHashes: hashes, Medium: medium}
}

func score(ix *Index, tokens []int, lora string, names ...string) []float64 {
	out := make([]float64, len(names))
	ix.Score(ix.Keys(tokens, lora, nil), names, out)
	return out
}

func TestIndex(t *testing.T) {
	prompt := seq(100, 4*bs+2) // 4 full blocks and a partial one

	t.Run("engine hash seed does not matter", func(t *testing.T) {
		ix := newIndex(t, 100)
		// Replica a stores the prompt in one event, b in two chained events with other hashes.
		ix.Apply("a", []scheduling.KVEvent{stored(prompt[:4*bs], 0, false, 1, 2, 3, 4)})
		ix.Apply("b", []scheduling.KVEvent{stored(prompt[:2*bs], 0, false, 91, 92), stored(prompt[2*bs:3*bs], 92, true, 93)})
		require.Equal(t, []float64{1, 0.75, 0}, score(ix, prompt, "", "a", "b", "c"))
		require.Equal(t, Stats{Keys: 4, Blocks: 7}, ix.Stats())
	})
	t.Run("removal shortens the prefix", func(t *testing.T) {
		ix := newIndex(t, 100)
		ix.Apply("a", []scheduling.KVEvent{stored(prompt[:4*bs], 0, false, 1, 2, 3, 4), removed("", 2)})
		require.Equal(t, []float64{0.25}, score(ix, prompt, "", "a"))
	})
	t.Run("LoRA adapters never share blocks", func(t *testing.T) {
		ix := newIndex(t, 100)
		ev := stored(prompt[:4*bs], 0, false, 1, 2, 3, 4)
		ev.LoRAName = "sql"
		ix.Apply("a", []scheduling.KVEvent{ev})
		require.Equal(t, []float64{0}, score(ix, prompt, "", "a"))
		require.Equal(t, []float64{1}, score(ix, prompt, "sql", "a"))
	})
	t.Run("a CPU hit weighs less", func(t *testing.T) {
		ix := newIndex(t, 100)
		gpu := stored(prompt[:2*bs], 0, false, 1, 2)
		cpu := stored(prompt[2*bs:4*bs], 2, true, 3, 4)
		cpu.Medium = "CPU"
		ix.Apply("a", []scheduling.KVEvent{gpu, cpu})
		require.Equal(t, []float64{(2 + 2*0.5) / 4.0}, score(ix, prompt, "", "a"))
		// The same block in both tiers counts at the better weight.
		ix.Apply("a", []scheduling.KVEvent{stored(prompt[2*bs:3*bs], 2, true, 3)})
		require.Equal(t, []float64{(3 + 0.5) / 4.0}, score(ix, prompt, "", "a"))
		require.Equal(t, map[uint64]int{1: 1, 2: 1, 3: 1}, ix.EngineHashes("a", "GPU"))
		require.Equal(t, map[uint64]int{3: 1, 4: 1}, ix.EngineHashes("a", "CPU"))
	})
	t.Run("unknown parent is an orphan", func(t *testing.T) {
		ix := newIndex(t, 100)
		ix.Apply("a", []scheduling.KVEvent{stored(prompt[bs:3*bs], 77, true, 2, 3)})
		require.Equal(t, Stats{Orphans: 2}, ix.Stats())
		require.Equal(t, []float64{0}, score(ix, prompt, "", "a"))
	})
	t.Run("removal of an unknown hash", func(t *testing.T) {
		ix := newIndex(t, 100)
		ix.Apply("a", []scheduling.KVEvent{removed("GPU", 5), removed("", 6)})
		require.Equal(t, Stats{UnknownRemoved: 2}, ix.Stats())
	})
	t.Run("all blocks cleared", func(t *testing.T) {
		ix := newIndex(t, 100)
		ix.Apply("a", []scheduling.KVEvent{stored(prompt[:4*bs], 0, false, 1, 2, 3, 4)})
		ix.Apply("b", []scheduling.KVEvent{stored(prompt[:4*bs], 0, false, 1, 2, 3, 4)})
		ix.Apply("a", []scheduling.KVEvent{{Kind: scheduling.AllBlocksCleared}})
		require.Equal(t, []float64{0, 1}, score(ix, prompt, "", "a", "b"))
		require.Equal(t, Stats{Keys: 4, Blocks: 4}, ix.Stats())
	})
	t.Run("duplicates are counted", func(t *testing.T) {
		ix := newIndex(t, 100)
		ev := stored(prompt[:bs], 0, false, 1)
		ix.Apply("a", []scheduling.KVEvent{ev, ev, removed("GPU", 1)})
		require.Equal(t, []float64{0.25}, score(ix, prompt, "", "a"))
		ix.Apply("a", []scheduling.KVEvent{removed("GPU", 1)})
		require.Equal(t, []float64{0}, score(ix, prompt, "", "a"))
		require.Equal(t, Stats{}, ix.Stats())
	})
	t.Run("a reused engine hash takes the new tokens", func(t *testing.T) {
		ix := newIndex(t, 100)
		ix.Apply("a", []scheduling.KVEvent{stored(seq(0, bs), 0, false, 1), stored(prompt[:bs], 0, false, 1)})
		require.Equal(t, []float64{0.25}, score(ix, prompt, "", "a"))
		require.Equal(t, Stats{Keys: 1, Blocks: 1}, ix.Stats())
	})
	t.Run("bad events are skipped", func(t *testing.T) {
		ix := newIndex(t, 100)
		wrongSize := stored(prompt[:8], 0, false, 1)
		wrongSize.BlockSize = 8
		short := stored(prompt[:bs], 0, false, 1, 2)
		disk := stored(prompt[:bs], 0, false, 1)
		disk.Medium = "DISK"
		ix.Apply("a", []scheduling.KVEvent{wrongSize, short, disk, {Kind: 42}})
		require.Equal(t, Stats{BadEvents: 3, OtherMedium: 1}, ix.Stats())
	})
	t.Run("memory is bounded", func(t *testing.T) {
		ix := newIndex(t, 3)
		ix.Apply("a", []scheduling.KVEvent{stored(prompt[:4*bs], 0, false, 1, 2, 3, 4)})
		st := ix.Stats()
		require.Equal(t, 3, st.Blocks)
		require.Equal(t, uint64(1), st.Evicted)
	})
	t.Run("no keys scores zero", func(t *testing.T) {
		ix := newIndex(t, 100)
		require.Equal(t, []float64{0}, score(ix, prompt[:bs-1], "", "a"))
	})
}

func TestNewRejects(t *testing.T) {
	for name, cfg := range map[string]Config{
		"block size":  {BlockSize: 0, MaxBlocksPerEndpoint: 1, Media: []Medium{{"GPU", 1}}},
		"max blocks":  {BlockSize: 16, MaxBlocksPerEndpoint: 0, Media: []Medium{{"GPU", 1}}},
		"media":       {BlockSize: 16, MaxBlocksPerEndpoint: 1},
		"weight":      {BlockSize: 16, MaxBlocksPerEndpoint: 1, Media: []Medium{{"GPU", 1.5}}},
		"twice":       {BlockSize: 16, MaxBlocksPerEndpoint: 1, Media: []Medium{{"GPU", 1}, {"GPU", 1}}},
		"want 1 to 4": {BlockSize: 16, MaxBlocksPerEndpoint: 1, Media: []Medium{{"A", 1}, {"B", 1}, {"C", 1}, {"D", 1}, {"E", 1}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(cfg)
			require.ErrorContains(t, err, name)
		})
	}
}

// FuzzApply drives the index with arbitrary event sequences on two endpoints and checks it
// against a reference model of per-medium copy counts (vllm.BlockSet's semantics), then that
// clearing every endpoint leaves nothing behind.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 1, 1, 3, 0})
	f.Add([]byte{0, 1, 0, 1, 1, 1, 1, 1, 2, 0})
	f.Add([]byte{4, 7, 0, 3, 9, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		ix := newIndex(t, 1<<20)
		media := []string{"GPU", "CPU", "DISK"}
		ref := map[string]map[string]map[uint64]int{}
		refOf := func(ep, m string) map[uint64]int {
			if ref[ep] == nil {
				ref[ep] = map[string]map[uint64]int{}
			}
			if ref[ep][m] == nil {
				ref[ep][m] = map[uint64]int{}
			}
			return ref[ep][m]
		}
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			ep := []string{"a", "b"}[op&1]
			m := media[int(arg>>4)%3]
			h := uint64(arg & 7)
			switch (op >> 1) % 3 {
			case 0: // store h as a chain head: its key depends on h only
				ev := stored(seq(int(h)*bs, bs), 0, false, h)
				ev.Medium = m
				ix.Apply(ep, []scheduling.KVEvent{ev})
				if m != "DISK" {
					refOf(ep, m)[h]++
				}
			case 1:
				ix.Apply(ep, []scheduling.KVEvent{removed(m, h)})
				if r := refOf(ep, m); r[h] > 1 {
					r[h]--
				} else {
					delete(r, h)
				}
			case 2:
				ix.Apply(ep, []scheduling.KVEvent{{Kind: scheduling.AllBlocksCleared, Medium: m}})
				clear(refOf(ep, m))
			}
		}
		for _, ep := range []string{"a", "b"} {
			for _, m := range media[:2] {
				require.Equal(t, refOf(ep, m), ix.EngineHashes(ep, m), "%s %s", ep, m)
			}
			ix.Apply(ep, []scheduling.KVEvent{{Kind: scheduling.AllBlocksCleared}})
		}
		st := ix.Stats()
		require.Zero(t, st.Keys)
		require.Zero(t, st.Blocks)
	})
}
