package sim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

// engineCfg is an H100 Llama-3.1-8B engine config with numBlocks KV blocks (0 = derived).
func engineCfg(numBlocks, blockSize, maxModelLen int) config.Sim {
	return config.Sim{Model: "llama-3.1-8b", GPU: "H100-SXM", NumGPUBlocks: numBlocks, BlockSize: blockSize,
		MaxModelLen: maxModelLen, MaxNumSeqs: 256}
}

func mustEngine(t testing.TB, cfg config.Sim) *Engine {
	t.Helper()
	e, err := NewEngine(cfg, "engine-0")
	require.NoError(t, err)
	return e
}

// stepLog is a deep copy of what one step produced.
type stepLog struct {
	Start, End time.Time
	Prefill    int
	Decode     int
	Tokens     []TokenRecord
	Finished   []FinishRecord
	Events     []KVEvent
	Stats      EngineStats
}

func copyStep(st *Step) stepLog {
	l := stepLog{Start: st.Start, End: st.End, Prefill: st.PrefillTokens, Decode: st.DecodeTokens,
		Tokens: slices.Clone(st.Tokens), Finished: slices.Clone(st.Finished), Stats: st.Stats}
	l.Stats.RunningLoRAs, l.Stats.WaitingLoRAs = slices.Clone(st.Stats.RunningLoRAs), slices.Clone(st.Stats.WaitingLoRAs)
	for _, e := range st.KVEvents {
		e.BlockHashes, e.TokenIDs = slices.Clone(e.BlockHashes), slices.Clone(e.TokenIDs)
		l.Events = append(l.Events, e)
	}
	return l
}

// drain runs e from now until it is idle, returning every step.
func drain(t testing.TB, e *Engine, now time.Time) []stepLog {
	t.Helper()
	var out []stepLog
	e.RunUntil(now, now.Add(24*time.Hour), func(st *Step) { out = append(out, copyStep(st)) })
	require.True(t, e.Idle(), "the engine still holds requests after a virtual day")
	return out
}

func finishedByID(steps []stepLog) map[string]FinishRecord {
	out := map[string]FinishRecord{}
	for _, s := range steps {
		for _, f := range s.Finished {
			out[f.ID] = f
		}
	}
	return out
}

func tokensOf(steps []stepLog, ref int) []int {
	var out []int
	for _, s := range steps {
		for _, tr := range s.Tokens {
			if tr.Ref == ref {
				out = append(out, tr.Token)
			}
		}
	}
	return out
}

// A workload with shared prefixes, arriving over time, run twice: identical records.
func TestEngineDeterministic(t *testing.T) {
	run := func() []stepLog {
		e := mustEngine(t, engineCfg(0, 16, 8192))
		t0 := time.Unix(1000, 0)
		var log []stepLog
		now := t0
		for i := range 40 {
			arrival := t0.Add(time.Duration(i) * 7 * time.Millisecond)
			now = e.RunUntil(now, arrival, func(st *Step) { log = append(log, copyStep(st)) })
			now = arrival
			prompt := append(tokensFrom(1, 300*(i%3+1)), tokensFrom(10000*(i+1), 50+i)...)
			require.NoError(t, e.Add(Request{ID: fmt.Sprint("r", i), Ref: i, Prompt: prompt, OutputLen: 20 + i, Arrival: arrival}))
		}
		return append(log, drain(t, e, now)...)
	}
	a, b := run(), run()
	require.Equal(t, a, b)
	require.Len(t, finishedByID(a), 40)
	require.Positive(t, a[len(a)-1].Stats.PrefixHits, "the shared prefixes hit")
}

func TestEnginePrefixHitsAndEvents(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 8192))
	t0 := time.Unix(0, 0)
	prompt := tokensFrom(1, 100)
	require.NoError(t, e.Add(Request{ID: "a", Ref: 1, Prompt: prompt, OutputLen: 3, Arrival: t0}))
	steps := drain(t, e, t0)
	require.Equal(t, 0, finishedByID(steps)["a"].CachedTokens)

	// The first step stores the prompt's 6 full blocks in one BlockStored, chained from
	// NONE_HASH, with their tokens.
	ev := steps[0].Events
	require.Len(t, ev, 1)
	require.Equal(t, KVBlockStored, ev[0].Kind)
	require.False(t, ev[0].HasParent)
	require.Equal(t, prompt[:96], ev[0].TokenIDs)
	parent := NoneHash(DefaultHashSeed)
	for j, h := range ev[0].BlockHashes {
		parent = HashBlockTokens(parent, prompt[j*16:(j+1)*16], nil)
		require.Equal(t, parent.Uint64(), h, "block %d", j)
	}

	now := steps[len(steps)-1].End
	require.NoError(t, e.Add(Request{ID: "b", Ref: 2, Prompt: prompt, OutputLen: 3, Arrival: now}))
	steps = drain(t, e, now)
	f := finishedByID(steps)["b"]
	require.Equal(t, 96, f.CachedTokens, "full blocks of all but the last prompt token hit")
	require.EqualValues(t, 96, steps[0].Stats.PrefixHits)
	require.EqualValues(t, 200, e.Stats().PrefixQueries)
	require.EqualValues(t, 96, e.Stats().PrefixHits)
}

// With room for few blocks, the cached blocks freed longest ago go first, tails before heads.
func TestEngineLRUEviction(t *testing.T) {
	e := mustEngine(t, engineCfg(9, 16, 128)) // 8 usable blocks
	t0 := time.Unix(0, 0)
	a, b := tokensFrom(1, 64), tokensFrom(5000, 64)
	require.NoError(t, e.Add(Request{ID: "a", Prompt: a, OutputLen: 1, Arrival: t0}))
	now := drain(t, e, t0)
	require.NoError(t, e.Add(Request{ID: "b", Prompt: b, OutputLen: 1, Arrival: now[len(now)-1].End}))
	steps := drain(t, e, now[len(now)-1].End)
	// a's 4 blocks and b's 4 blocks fill the 8; b needed only fresh blocks: no eviction.
	for _, s := range steps {
		for _, ev := range s.Events {
			require.NotEqual(t, KVBlockRemoved, ev.Kind)
		}
	}
	// c (new, 3 blocks) evicts a's tail blocks first: a's head block still hits afterwards.
	end := steps[len(steps)-1].End
	require.NoError(t, e.Add(Request{ID: "c", Prompt: tokensFrom(9000, 40), OutputLen: 1, Arrival: end}))
	steps = drain(t, e, end)
	var removed []uint64
	for _, s := range steps {
		for _, ev := range s.Events {
			if ev.Kind == KVBlockRemoved {
				removed = append(removed, ev.BlockHashes...)
			}
		}
	}
	ha := make([]uint64, 4)
	parent := NoneHash(DefaultHashSeed)
	for j := range ha {
		parent = HashBlockTokens(parent, a[j*16:(j+1)*16], nil)
		ha[j] = parent.Uint64()
	}
	require.Equal(t, []uint64{ha[3], ha[2], ha[1]}, removed, "a's blocks, tail first")
	end = steps[len(steps)-1].End
	require.NoError(t, e.Add(Request{ID: "a2", Prompt: a, OutputLen: 1, Arrival: end}))
	require.Equal(t, 16, finishedByID(drain(t, e, end))["a2"].CachedTokens)
}

// Two requests whose outputs outgrow the cache: the later one is preempted, recomputed, and
// still produces exactly its planned tokens.
func TestEnginePreemptionByRecompute(t *testing.T) {
	e := mustEngine(t, engineCfg(9, 4, 32)) // 8 usable blocks of 4 tokens
	t0 := time.Unix(0, 0)
	out1, out2 := tokensFrom(700, 10), tokensFrom(800, 10)
	require.NoError(t, e.Add(Request{ID: "a", Ref: 1, Prompt: tokensFrom(1, 8), Output: out1, Arrival: t0}))
	require.NoError(t, e.Add(Request{ID: "b", Ref: 2, Prompt: tokensFrom(100, 8), Output: out2, Arrival: t0}))
	steps := drain(t, e, t0)
	f := finishedByID(steps)
	require.Equal(t, 0, f["a"].Preemptions)
	require.Positive(t, f["b"].Preemptions)
	require.Positive(t, e.Stats().Preemptions)
	require.Equal(t, out1, tokensOf(steps, 1))
	require.Equal(t, out2, tokensOf(steps, 2))
	require.Equal(t, 10, f["b"].OutputTokens)
	require.Zero(t, e.Stats().KVCacheUsage)
}

func TestEngineAddErrors(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 100))
	t0 := time.Unix(0, 0)
	for _, tc := range []struct {
		name string
		r    Request
		want error
	}{
		{"empty prompt", Request{ID: "x", Prompt: nil, OutputLen: 1}, ErrPromptTooLong},
		{"prompt of max_model_len", Request{ID: "x", Prompt: tokensFrom(1, 100), OutputLen: 1}, ErrPromptTooLong},
		{"prompt plus output over max_model_len", Request{ID: "x", Prompt: tokensFrom(1, 90), OutputLen: 11}, ErrOutputTooLong},
		{"no output", Request{ID: "x", Prompt: tokensFrom(1, 10)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.Add(tc.r)
			require.Error(t, err)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
	require.NoError(t, e.Add(Request{ID: "ok", Prompt: tokensFrom(1, 90), OutputLen: 10, Arrival: t0}))
	require.ErrorIs(t, e.Add(Request{ID: "ok", Prompt: tokensFrom(1, 9), OutputLen: 1, Arrival: t0}), ErrDuplicateID)
	require.True(t, e.Abort("ok"))
	require.False(t, e.Abort("ok"))
	require.True(t, e.Idle())
	_, ok := e.Schedule(t0)
	require.False(t, ok)
}

func TestNewEngineErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*config.Sim)
	}{
		{"unknown model", func(c *config.Sim) { c.Model = "nope" }},
		{"unknown gpu", func(c *config.Sim) { c.GPU = "nope" }},
		{"cache too small for max_model_len", func(c *config.Sim) { c.NumGPUBlocks, c.MaxModelLen = 4, 100 }},
		{"negative block size", func(c *config.Sim) { c.BlockSize = -1 }},
		{"negative bandwidth", func(c *config.Sim) { c.KVTransferGbps = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := engineCfg(0, 16, 8192)
			tc.mut(&cfg)
			_, err := NewEngine(cfg, "x")
			require.Error(t, err)
		})
	}
}

// The step's token records are the planned output, TTFT is the first token's step end.
func TestEngineRecords(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 8192))
	t0 := time.Unix(0, 0)
	out := tokensFrom(42, 5)
	require.NoError(t, e.Add(Request{ID: "a", Ref: 7, Prompt: tokensFrom(1, 30), Output: out, FinishReason: "stop", Arrival: t0}))
	steps := drain(t, e, t0)
	require.Len(t, steps, 5)
	require.Equal(t, out, tokensOf(steps, 7))
	f := finishedByID(steps)["a"]
	require.Equal(t, FinishRecord{Ref: 7, ID: "a", Reason: "stop", PromptTokens: 30, OutputTokens: 5, Arrival: t0,
		FirstScheduled: t0, FirstToken: steps[0].End, End: steps[4].End}, f)
	tm := e.Timing()
	require.Equal(t, t0.Add(tm.StepTime(30, 0, 30)), steps[0].End, "prefill step: roofline time")
	require.Equal(t, 30, steps[0].Prefill)
	require.Equal(t, 1, steps[1].Decode)

	// Synthetic outputs are deterministic per id and differ between ids.
	require.Equal(t, syntheticOutput(0, "x", 10), syntheticOutput(0, "x", 10))
	require.NotEqual(t, syntheticOutput(0, "x", 10), syntheticOutput(0, "y", 10))
}

// RunUntil leaves the step that crosses until in flight, and Complete finishes it.
func TestEngineRunUntil(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 8192))
	t0 := time.Unix(0, 0)
	require.NoError(t, e.Add(Request{ID: "a", Prompt: tokensFrom(1, 30), OutputLen: 100, Arrival: t0}))
	n := 0
	until := t0.Add(50 * time.Millisecond)
	reached := e.RunUntil(t0, until, func(*Step) { n++ })
	require.True(t, e.InFlight())
	require.False(t, reached.After(until))
	require.True(t, e.StepEnd().After(until))
	require.Positive(t, n)
	st := e.Complete()
	require.EqualValues(t, n+1, st.Stats.Steps)
	require.False(t, e.InFlight())
}

func TestEngineDisabledEvents(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 8192))
	e.EnableKVEvents(false)
	t0 := time.Unix(0, 0)
	require.NoError(t, e.Add(Request{ID: "a", Prompt: tokensFrom(1, 64), OutputLen: 2, Arrival: t0}))
	for _, s := range drain(t, e, t0) {
		require.Empty(t, s.Events)
	}
	require.True(t, e.ResetPrefixCache())
	e.EnableKVEvents(true)
	require.True(t, e.ResetPrefixCache())
	st, ok := e.Schedule(t0)
	require.False(t, ok)
	require.Equal(t, []KVEvent{{Kind: KVAllBlocksCleared, BlockSize: 16, Medium: "GPU"}}, st.KVEvents)
}

func TestHashBlockMatchesCBOR(t *testing.T) {
	parent := NoneHash(DefaultHashSeed)
	var buf []byte
	for _, tc := range []struct {
		tokens []int
		lora   string
	}{
		{tokensFrom(0, 16), ""},
		{[]int{0, 23, 24, 255, 256, 65535, 65536, 1 << 31, 1<<32 + 5, 128000, -1, -25, -300}, ""},
		{tokensFrom(128000, 16), "my-lora"},
		{tokensFrom(5, 3), string(make([]byte, 300))},
		{[]int{}, ""},
	} {
		var extra []any
		if tc.lora != "" {
			extra = []any{tc.lora}
		}
		var got BlockHash
		got, buf = hashBlock(buf, parent, tc.tokens, tc.lora)
		require.Equal(t, HashBlockTokens(parent, tc.tokens, extra), got, "%v %q", tc.tokens, tc.lora)
	}
}

// BenchmarkEngine is simulated tokens (prompt and output) per wall second of one H100
// Llama-3.1-8B engine on a Mooncake-like load: ~8k-token prompts sharing prefixes, 350 output
// tokens, arriving faster than the engine serves them.
func BenchmarkEngine(b *testing.B) {
	const n, in, out = 200, 8000, 350
	prompts := make([][]int, n)
	for i := range prompts {
		// 50% of each prompt is one of 10 shared prefixes, the rest its own.
		p := append(tokensFrom(100000*(i%10), in/2), tokensFrom(1000000+i*in, in/2)...)
		prompts[i] = p
	}
	b.ReportAllocs()
	var simTokens int64
	start := time.Now()
	for b.Loop() {
		e := mustEngine(b, engineCfg(0, 16, 16384))
		t0 := time.Unix(0, 0)
		now := t0
		for i, p := range prompts {
			arrival := t0.Add(time.Duration(i) * 100 * time.Millisecond)
			now = e.RunUntil(now, arrival, nil)
			if !e.InFlight() {
				now = arrival
			}
			if err := e.Add(Request{ID: fmt.Sprint(i), Ref: i, Prompt: p, OutputLen: out, Arrival: arrival}); err != nil {
				b.Fatal(err)
			}
		}
		e.RunUntil(now, now.Add(time.Hour), nil)
		if !e.Idle() {
			b.Fatal("the engine is not idle after an hour")
		}
		simTokens += int64(n * (in + out))
	}
	b.ReportMetric(float64(simTokens)/time.Since(start).Seconds(), "sim-tokens/s")
}

// LoRA requests hash their blocks with the adapter name, report it in BlockStored and in the
// stats, and max_loras keeps other adapters waiting without blocking the base model.
func TestEngineLoRA(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 8192)) // max_loras 0 -> 1
	t0 := time.Unix(0, 0)
	prompt := tokensFrom(1, 40)
	require.NoError(t, e.Add(Request{ID: "a", Prompt: prompt, OutputLen: 5, LoRA: "sql", LoRAID: 1, Arrival: t0}))
	require.NoError(t, e.Add(Request{ID: "b", Prompt: prompt, OutputLen: 5, LoRA: "chat", LoRAID: 2, Arrival: t0}))
	require.NoError(t, e.Add(Request{ID: "c", Prompt: prompt, OutputLen: 5, Arrival: t0}))
	st, ok := e.Schedule(t0)
	require.True(t, ok)
	require.Equal(t, []string{"sql"}, st.Stats.RunningLoRAs)
	require.Equal(t, []string{"chat"}, st.Stats.WaitingLoRAs)
	require.Equal(t, 2, st.NumRequests, "the base-model request is not held up")
	require.Len(t, st.KVEvents, 2)
	sql := st.KVEvents[0]
	require.Equal(t, "sql", sql.LoRAName)
	require.Equal(t, 1, sql.LoRAID)
	h0 := HashBlockTokens(NoneHash(DefaultHashSeed), prompt[:16], []any{"sql"})
	require.Equal(t, h0.Uint64(), sql.BlockHashes[0])
	require.NotEqual(t, st.KVEvents[1].BlockHashes[0], sql.BlockHashes[0], "the base model's blocks hash apart")
	e.Complete()
	f := finishedByID(drain(t, e, st.End))
	require.Len(t, f, 3)
	require.Zero(t, f["b"].CachedTokens, "chat's blocks hash differently from sql's")
	stats := e.Stats()
	require.Empty(t, stats.RunningLoRAs)
	require.Empty(t, stats.WaitingLoRAs)
}

// Abort drops a waiting request at once and a running one at the next Schedule while a step is
// in flight; neither produces a FinishRecord, and their blocks come back.
func TestEngineAbort(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 8192))
	t0 := time.Unix(0, 0)
	require.NoError(t, e.Add(Request{ID: "run", Prompt: tokensFrom(1, 64), OutputLen: 50, Arrival: t0}))
	st, ok := e.Schedule(t0)
	require.True(t, ok)
	require.NoError(t, e.Add(Request{ID: "wait", Prompt: tokensFrom(500, 64), OutputLen: 5, Arrival: t0}))
	require.True(t, e.Abort("wait"))
	require.True(t, e.Abort("run"))
	require.Empty(t, e.Complete().Tokens, "the aborted request samples nothing")
	st, ok = e.Schedule(st.End)
	require.False(t, ok)
	require.True(t, e.Idle())
	require.Zero(t, st.Stats.KVCacheUsage)
	require.False(t, e.Abort("run"))
	// Aborted ids can be used again.
	require.NoError(t, e.Add(Request{ID: "run", Prompt: tokensFrom(1, 64), OutputLen: 1, Arrival: st.End}))
	require.Equal(t, 48, finishedByID(drain(t, e, st.End))["run"].CachedTokens, "its computed blocks stayed cached")
}

// Requests added ahead of their arrival stay invisible until then, in arrival order.
func TestEngineFutureArrivals(t *testing.T) {
	e := mustEngine(t, engineCfg(0, 16, 8192))
	t0 := time.Unix(0, 0)
	require.NoError(t, e.Add(Request{ID: "late", Ref: 2, Prompt: tokensFrom(1, 20), OutputLen: 1, Arrival: t0.Add(2 * time.Second)}))
	require.NoError(t, e.Add(Request{ID: "early", Ref: 1, Prompt: tokensFrom(100, 20), OutputLen: 1, Arrival: t0.Add(time.Second)}))
	st, ok := e.Schedule(t0)
	require.False(t, ok)
	require.Zero(t, st.Stats.Waiting, "not arrived yet")
	require.False(t, e.Idle())
	wake, ok := e.NextWake()
	require.True(t, ok)
	require.Equal(t, t0.Add(time.Second), wake)
	require.True(t, e.Abort("late"))
	f := finishedByID(drain(t, e, t0))
	require.Len(t, f, 1)
	require.Equal(t, t0.Add(time.Second), f["early"].FirstScheduled)
}
