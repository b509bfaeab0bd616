package replay

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

const sample = `{"timestamp": 0, "input_length": 1100, "output_length": 10, "hash_ids": [0, 1, 2]}
{"timestamp": 100, "input_length": 1200, "output_length": 5, "hash_ids": [0, 1, 3]}
{"timestamp": 200, "input_length": 600, "output_length": 1, "hash_ids": [7, 8]}
`

func TestReadMooncake(t *testing.T) {
	rows, err := ReadTrace(strings.NewReader(sample), FormatMooncake, 0)
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Equal(t, Row{Arrival: 100 * time.Millisecond, InputTokens: 1200, OutputTokens: 5, HashIDs: []int64{0, 1, 3}}, rows[1])
	rows, err = ReadTrace(strings.NewReader(sample), FormatMooncake, 2)
	require.NoError(t, err)
	require.Len(t, rows, 2)
}

func TestReadTraceErrors(t *testing.T) {
	for _, tt := range []struct{ format, in, want string }{
		{FormatMooncake, `{"timestamp":0,"input_length":1100,"output_length":1,"hash_ids":[1]}`, "line 1: 1 hash_ids for input_length 1100, want ceil(input_length/512)"},
		{FormatMooncake, `{"timestamp":0}`, "line 1: timestamp, input_length and output_length are required"},
		{FormatMooncake, "\n{", "line 2: unexpected end of JSON input"},
		{FormatAzure, "a,b,c\n", "header: want TIMESTAMP,ContextTokens,GeneratedTokens"},
		{FormatAzure, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,x,1\n", `line 2: ContextTokens must be >= 1`},
		{"csv", "", `trace format "csv": want mooncake or azure`},
	} {
		_, err := ReadTrace(strings.NewReader(tt.in), tt.format, 0)
		require.ErrorContains(t, err, tt.want)
	}
}

func TestReadAzure(t *testing.T) {
	in := "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
	rows, err := ReadTrace(strings.NewReader(in), FormatAzure, 0)
	require.NoError(t, err)
	require.Equal(t, []Row{{InputTokens: 374, OutputTokens: 44}, {Arrival: 4314579 * time.Microsecond, InputTokens: 396, OutputTokens: 109}}, rows)
}

func FuzzReadTrace(f *testing.F) {
	f.Add([]byte(sample), true)
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"), false)
	f.Fuzz(func(t *testing.T, b []byte, mooncake bool) {
		format := FormatAzure
		if mooncake {
			format = FormatMooncake
		}
		rows, err := ReadTrace(strings.NewReader(string(b)), format, 0)
		if err != nil {
			return
		}
		for _, r := range rows {
			require.GreaterOrEqual(t, r.InputTokens, 1)
			require.GreaterOrEqual(t, r.OutputTokens, 0)
			require.GreaterOrEqual(t, r.Arrival, time.Duration(0))
		}
	})
}

// Two requests sharing two 512-token blocks: on one replica the second hits them; the ideal ratio
// counts the same; every request completes; all policies run deterministically.
func TestRunSmall(t *testing.T) {
	rows, err := ReadTrace(strings.NewReader(sample), FormatMooncake, 0)
	require.NoError(t, err)
	opt := Options{Replicas: 1, Model: "Llama-3.1-8B", GPU: "H100-SXM", Seed: 1}
	r, err := Run(context.Background(), rows, "default", opt)
	require.NoError(t, err)
	require.Equal(t, 3, r.Completed)
	require.Equal(t, []int{3}, r.PerReplica)
	require.InDelta(t, 1024.0/2900, r.HitRatio, 1e-9)
	require.InDelta(t, 1024.0/2900, r.IdealHitRatio, 1e-9)
	require.Greater(t, r.TTFT.P50, 0.0)
	require.Greater(t, r.ITL.P50, 0.0)
	require.Zero(t, r.LoadSpread)

	for _, p := range Policies {
		a, err := Run(context.Background(), rows, p, Options{Replicas: 3, Model: "Llama-3.1-8B", GPU: "H100-SXM", Seed: 7})
		require.NoError(t, err, p)
		b, err := Run(context.Background(), rows, p, Options{Replicas: 3, Model: "Llama-3.1-8B", GPU: "H100-SXM", Seed: 7})
		require.NoError(t, err, p)
		require.Equal(t, 3, a.Completed, p)
		a.PickMicros, b.PickMicros = 0, 0
		require.Equal(t, a, b, "%s: a seed makes a run deterministic", p)
	}
	_, err = Run(context.Background(), rows, "fastest", opt)
	require.ErrorContains(t, err, `unknown policy "fastest"`)
}

// Round-robin spreads the two requests sharing a prefix; the prefix-aware default keeps them
// together and hits.
func TestPrefixAwarePolicyHits(t *testing.T) {
	rows, err := ReadTrace(strings.NewReader(sample), FormatMooncake, 0)
	require.NoError(t, err)
	opt := Options{Replicas: 3, Model: "Llama-3.1-8B", GPU: "H100-SXM", Seed: 1}
	rr, err := Run(context.Background(), rows, "round-robin", opt)
	require.NoError(t, err)
	require.Zero(t, rr.HitRatio)
	for _, p := range []string{"default", "llm-d-approx", "precise-prefix", "predicted-latency"} {
		res, err := Run(context.Background(), rows, p, opt)
		require.NoError(t, err)
		require.InDelta(t, 1024.0/2900, res.HitRatio, 1e-9, p)
	}
}

// Only a policy with a KV-event consumer makes the engines record events.
func TestWantsKVEvents(t *testing.T) {
	for _, tt := range []struct {
		policy string
		want   bool
	}{{"precise-prefix", true}, {"default", false}, {"round-robin", false}, {"llm-d-approx", false}} {
		epc, err := PolicyConfig(tt.policy)
		require.NoError(t, err)
		require.Equal(t, tt.want, wantsKVEvents(epc), tt.policy)
	}
}

// The real Mooncake trace's first rows, when the shared data is present.
func TestMooncakeTraceHead(t *testing.T) {
	f, err := os.Open("../../../shared/data/traces/mooncake_conversation_trace.jsonl")
	if err != nil {
		t.Skipf("shared trace not available: %v", err)
	}
	defer f.Close()
	rows, err := ReadTrace(f, FormatMooncake, 300)
	require.NoError(t, err)
	res, err := Run(context.Background(), rows, "default", Options{Replicas: 4, Model: "Llama-3.1-8B", GPU: "H100-SXM", Seed: 1})
	require.NoError(t, err)
	require.Equal(t, 300, res.Completed+res.Skipped)
	require.Greater(t, res.IdealHitRatio, 0.0)
	require.LessOrEqual(t, res.HitRatio, res.IdealHitRatio+1e-9)
}

func TestWriteSVG(t *testing.T) {
	var b strings.Builder
	require.NoError(t, WriteSVG(&b, "a <title>", []*Result{{Policy: "x&y", HitRatio: 0.1, IdealHitRatio: 0.3, TTFT: Percentiles{P50: 1, P90: 2, P99: 4}}, {Policy: "configs/z.yaml"}}))
	out := b.String()
	require.True(t, strings.HasPrefix(out, `<svg xmlns="http://www.w3.org/2000/svg"`))
	require.Contains(t, out, "a &lt;title&gt;")
	require.Contains(t, out, "x&amp;y")
	require.Contains(t, out, ">z.yaml<", "a config file is labelled by its base name")
	require.Contains(t, out, `width="400.0"`, "the longest p99 spans the scale")
	require.True(t, strings.HasSuffix(out, "</svg>\n"))
}

func TestSynthesizeRoundTrip(t *testing.T) {
	rows, err := Synthesize(SynthOptions{Tenants: 3, PrefixTokens: 1000, QuestionTokens: 600, OutputTokens: 8, Requests: 50, Rate: 10, Seed: 1})
	require.NoError(t, err)
	require.Len(t, rows, 50)
	for _, r := range rows {
		require.Equal(t, 1024+600, r.InputTokens)
		require.Len(t, r.HashIDs, 4)
		require.Less(t, r.HashIDs[0], int64(6), "prefix ids are the tenant's")
		require.GreaterOrEqual(t, r.HashIDs[2], int64(6), "question ids are fresh")
	}
	var b strings.Builder
	require.NoError(t, WriteMooncake(&b, rows))
	back, err := ReadTrace(strings.NewReader(b.String()), FormatMooncake, 0)
	require.NoError(t, err)
	require.Len(t, back, 50)
	for i := range rows {
		require.Equal(t, rows[i].HashIDs, back[i].HashIDs)
		require.Equal(t, rows[i].Arrival.Milliseconds(), back[i].Arrival.Milliseconds())
	}
	_, err = Synthesize(SynthOptions{Tenants: 1, PrefixTokens: 1, QuestionTokens: 1, OutputTokens: 1, Requests: 1})
	require.ErrorContains(t, err, "rate must be positive")
}

// Prompts are built as ../shared/data/README.md says: one deterministic 512-token block per hash
// id, the last cut to fit, so two rows share exactly the tokens of the ids they share.
func TestRequestTokens(t *testing.T) {
	a := Row{InputTokens: 1100, OutputTokens: 10, HashIDs: []int64{0, 1, 2}}
	b := Row{InputTokens: 1200, OutputTokens: 5, HashIDs: []int64{0, 1, 3}}
	ta, tb := requestTokens(&a, 0), requestTokens(&b, 1)
	require.Len(t, ta, 1110)
	require.Len(t, tb, 1205)
	require.Equal(t, ta[:1024], tb[:1024])
	require.NotEqual(t, ta[1024:1030], tb[1024:1030])
	require.NotEqual(t, ta[1100:1105], tb[1200:1205], "answers are unique to their row")
	require.Equal(t, ta, requestTokens(&a, 0), "deterministic")

	// A partial block is the head of the full block of the same id.
	short := Row{InputTokens: 100, OutputTokens: 1, HashIDs: []int64{9}}
	long := Row{InputTokens: 600, OutputTokens: 1, HashIDs: []int64{9, 10}}
	require.Equal(t, requestTokens(&short, 0)[:100], requestTokens(&long, 1)[:100])

	// Rows without hash ids are unique.
	u1, u2 := Row{InputTokens: 40, OutputTokens: 1}, Row{InputTokens: 40, OutputTokens: 1}
	require.NotEqual(t, requestTokens(&u1, 0)[:40], requestTokens(&u2, 1)[:40])
	for _, tok := range ta {
		require.True(t, tok >= 0 && tok < tokenSpace)
	}

	parts := promptParts(ta[:1100])
	require.Len(t, parts, 3)
	require.Len(t, parts[0], 4*512)
	require.Len(t, parts[2], 4*76)
	require.Equal(t, parts[:2], promptParts(tb[:1200])[:2])
}

// A conversation's next turn holds the previous prompt and answer, token for token; so does an
// agent loop's next step.
func TestSynthesizeSessions(t *testing.T) {
	rows, err := Synthesize(SynthOptions{Tenants: 4, PrefixTokens: 700, QuestionTokens: 300, OutputTokens: 90,
		Requests: 300, Rate: 20, Turns: 3, AgentFraction: 0.5, AgentSteps: 3, ToolTokens: 200, AgentOutputTokens: 30, Seed: 3})
	require.NoError(t, err)
	require.Len(t, rows, 300)
	last := map[string][]int{}
	follows, agents := 0, 0
	for i := range rows {
		r := &rows[i]
		require.NotEmpty(t, r.Session)
		if i > 0 {
			require.GreaterOrEqual(t, r.Arrival, rows[i-1].Arrival)
		}
		toks := requestTokens(r, i)
		if prev, ok := last[r.Session]; ok {
			require.Greater(t, r.InputTokens, len(prev))
			require.Equal(t, prev, toks[:len(prev)], "row %d continues its session", i)
			follows++
		} else {
			require.Equal(t, 1024+300, r.InputTokens, "a session starts with the system prompt and a question")
		}
		if r.OutputTokens == 30 {
			agents++
		}
		last[r.Session] = toks
	}
	require.Greater(t, follows, 100)
	require.Greater(t, agents, 50)

	// Every row's prompt starts with its tenant's two system-prompt blocks.
	for _, r := range rows {
		require.Less(t, r.HashIDs[1], int64(8))
		require.Equal(t, r.HashIDs[0]+1, r.HashIDs[1])
	}
	var b strings.Builder
	require.NoError(t, WriteMooncake(&b, rows))
	back, err := ReadTrace(strings.NewReader(b.String()), FormatMooncake, 0)
	require.NoError(t, err)
	for i := range rows {
		require.Equal(t, rows[i].OutputHashIDs, back[i].OutputHashIDs)
		require.Equal(t, rows[i].Session, back[i].Session)
	}
}

// The ideal cache counts partial blocks by the tokens computed, in whole engine blocks, never the
// last prompt token.
func TestIdealCache(t *testing.T) {
	c := newIdealCache(16)
	require.Zero(t, c.hit(&Row{InputTokens: 700, HashIDs: []int64{1, 2}, OutputTokens: 100, OutputHashIDs: []int64{}}))
	// 512 + 188 prompt + 100 answer tokens of block 2 were computed: 800 tokens.
	require.Equal(t, 800, c.hit(&Row{InputTokens: 900, HashIDs: []int64{1, 2}}))
	require.Equal(t, 512, c.hit(&Row{InputTokens: 1100, HashIDs: []int64{1, 3, 4}}))
	require.Equal(t, 96, c.hit(&Row{InputTokens: 100, HashIDs: []int64{1}}), "at most input-1, rounded down to blocks")
	require.Zero(t, c.hit(&Row{InputTokens: 100}))
}

// The profile proposed for the router's default (docs/benchmarks.md) loads as a Strata config
// and routes the shared prefix to where it is cached.
func TestProposedDefaultProfile(t *testing.T) {
	cfg, err := config.Load("testdata/proposed-default.yaml")
	require.NoError(t, err)
	require.NotNil(t, cfg.Router.Scheduler)
	rows, err := ReadTrace(strings.NewReader(sample), FormatMooncake, 0)
	require.NoError(t, err)
	require.True(t, wantsKVEvents(*cfg.Router.Scheduler))
	res, err := RunConfig(context.Background(), rows, "proposed", *cfg.Router.Scheduler,
		Options{Replicas: 3, Model: "Llama-3.1-8B", GPU: "H100-SXM", Seed: 1})
	require.NoError(t, err)
	require.Equal(t, 3, res.Completed)
	require.InDelta(t, 1024.0/2900, res.HitRatio, 1e-9)
}
