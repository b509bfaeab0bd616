package kvindex

import (
	"fmt"
	"math/rand/v2"
	"slices"
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

// naiveScore is Score computed from the holder lists alone, one endpoint at a time.
func naiveScore(ix *Index, keys []uint64, names []string) []float64 {
	out := make([]float64, len(names))
	for j, name := range names {
		e := ix.endpoint(name, false)
		if e == nil || len(keys) == 0 {
			continue
		}
		sum := 0.0
		for _, k := range keys {
			s := &ix.shards[k&(numShards-1)]
			s.mu.RLock()
			hs := []holder{}
			if v, ok := s.one.get(k); ok && unpack(v).ep != multiEP {
				hs = append(hs, unpack(v))
			} else if ok {
				hs = append(hs, s.multi[k].holders...)
			}
			s.mu.RUnlock()
			w := -1.0
			for _, h := range hs {
				if h.ep == e.id {
					for m, c := range h.counts[:len(ix.weights)] {
						if c > 0 {
							w = max(w, ix.weights[m])
						}
					}
				}
			}
			if w < 0 {
				break
			}
			sum += w
		}
		out[j] = sum / float64(len(keys))
	}
	return out
}

// Score's bitset path (blocks held by many endpoints) and holder path agree with a naive
// per-endpoint walk, through stores, removals in both tiers and clears on 80 endpoints (more
// than one bitset word).
func TestScoreMatchesNaive(t *testing.T) {
	ix := newIndex(t, 1<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	const eps = 80
	names := make([]string, eps)
	for i := range names {
		names[i] = fmt.Sprintf("ep-%02d", i)
	}
	base := seq(1, 12*bs)
	prompts := [][]int{base, append(slices.Clone(base[:6*bs]), seq(5000, 6*bs)...), seq(9000, 8*bs)}
	hash := uint64(0)
	nonzero := 0
	for round := range 400 {
		ep := names[rng.IntN(eps)]
		p := prompts[rng.IntN(len(prompts))]
		n := 1 + rng.IntN(len(p)/bs)
		medium := []string{"GPU", "CPU"}[rng.IntN(2)]
		switch rng.IntN(10) {
		case 0:
			ix.Apply(ep, []scheduling.KVEvent{{Kind: scheduling.AllBlocksCleared, Medium: medium}})
		case 1, 2:
			hashes := ix.EngineHashes(ep, medium)
			for h := range hashes {
				ix.Apply(ep, []scheduling.KVEvent{removed(medium, h)})
				break
			}
		default:
			hash += 1000
			ev := stored(p[:n*bs], 0, false)
			for i := range n {
				ev.BlockHashes = append(ev.BlockHashes, hash+uint64(i))
			}
			ev.Medium = medium
			ix.Apply(ep, []scheduling.KVEvent{ev})
		}
		if round%20 == 0 {
			for _, p := range prompts {
				keys := ix.Keys(p, "", nil)
				got := make([]float64, eps)
				ix.Score(keys, names, got)
				want := naiveScore(ix, keys, names)
				for j := range got {
					require.InDelta(t, want[j], got[j], 1e-9, "round %d endpoint %s", round, names[j])
					if got[j] > 0 {
						nonzero++
					}
				}
			}
		}
	}
	wide := 0
	for i := range ix.shards {
		for _, en := range ix.shards[i].multi {
			if en.bits != nil {
				wide++
			}
		}
	}
	require.Positive(t, wide, "the test must exercise the bitset path")
	require.Greater(t, nonzero, 100)
}

// FuzzEvents applies arbitrary, often malformed events (unknown parents, wrong block sizes,
// short token lists, unknown media and kinds) from three endpoints: the index never panics,
// scores stay in [0, 1], and clearing every endpoint leaves it empty.
func FuzzEvents(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9})
	f.Fuzz(func(t *testing.T, data []byte) {
		ix := newIndex(t, 8)
		names := []string{"a", "b", "c"}
		for i := 0; i+3 < len(data); i += 4 {
			op, a, b, c := data[i], data[i+1], data[i+2], data[i+3]
			ev := scheduling.KVEvent{Kind: scheduling.KVEventKind(op % 5), Medium: []string{"", "GPU", "CPU", "NVME"}[a%4],
				BlockSize: []int{bs, bs, 2 * bs, 0}[b%4], HasParent: c&1 == 1, ParentHash: uint64(c >> 4), LoRAName: []string{"", "x"}[c>>1&1]}
			for j := range int(a>>4) % 4 {
				ev.BlockHashes = append(ev.BlockHashes, uint64(b>>2)+uint64(j))
			}
			ev.TokenIDs = seq(int(c), max(0, len(ev.BlockHashes)*bs-int(b>>6)))
			ix.Apply(names[op>>5%3], []scheduling.KVEvent{ev})
			scores := make([]float64, 3)
			ix.Score(ix.Keys(seq(int(c), 4*bs), "", nil), names, scores)
			for _, s := range scores {
				require.True(t, s >= 0 && s <= 1, "score %g", s)
			}
			require.Equal(t, naiveScore(ix, ix.Keys(seq(int(c), 4*bs), "", nil), names), scores)
		}
		for _, n := range names {
			ix.Apply(n, []scheduling.KVEvent{{Kind: scheduling.AllBlocksCleared}})
		}
		st := ix.Stats()
		require.Zero(t, st.Keys)
		require.Zero(t, st.Blocks)
	})
}

// keyTable behaves as a map through inserts, updates and deletions with long probe runs (keys
// crowded onto few home slots, wrapping around the table's end).
func TestKeyTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var kt keyTable
	ref := map[uint64]uint64{}
	for i := range 200000 {
		k := uint64(1+rng.IntN(300)) << 6 // homes crowd on the low slots and wrap
		if rng.IntN(3) == 0 {
			k = rng.Uint64() | 1
		}
		switch rng.IntN(3) {
		case 0, 1:
			v := rng.Uint64()
			kt.put(k, v)
			ref[k] = v
		case 2:
			kt.del(k)
			delete(ref, k)
		}
		if i%4999 == 0 {
			require.Equal(t, len(ref), kt.n)
			for k, v := range ref {
				got, ok := kt.get(k)
				require.True(t, ok)
				require.Equal(t, v, got)
			}
			_, ok := kt.get(12345 << 6)
			require.Equal(t, ref[12345<<6] != 0, ok)
		}
	}
	for k := range ref {
		kt.del(k)
	}
	require.Zero(t, kt.n)
	for _, sl := range kt.slots {
		require.Zero(t, sl.key)
	}
}

func TestPack(t *testing.T) {
	h := holder{ep: 513, counts: [maxMedia]uint16{1, maxCount, 0, 7}}
	require.Equal(t, h, unpack(pack(h)))
}
