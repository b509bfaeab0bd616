package scheduling

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func names(eps []*Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Name
	}
	return out
}

func ep(name string, mods ...func(*Endpoint)) *Endpoint {
	e := &Endpoint{Name: name, Models: []string{"m"}, ModelsKnown: true, Healthy: true}
	for _, m := range mods {
		m(e)
	}
	return e
}

func unhealthy(e *Endpoint) { e.Healthy = false }
func stale(e *Endpoint)     { e.Stale = true }
func serves(m ...string) func(*Endpoint) {
	return func(e *Endpoint) { e.Models = m }
}
func unknownModels(e *Endpoint) { e.Models, e.ModelsKnown = nil, false }
func waiting(n int) func(*Endpoint) {
	return func(e *Endpoint) { e.Metrics.Waiting = n }
}
func inFlight(n int) func(*Endpoint) {
	return func(e *Endpoint) { e.InFlight = n }
}
func kv(u float64) func(*Endpoint) {
	return func(e *Endpoint) { e.Metrics.KVCacheUsage = u }
}

func TestModelFilter(t *testing.T) {
	tests := []struct {
		name    string
		eps     []*Endpoint
		model   string
		want    []string
		wantErr error
	}{
		{"keeps servers, healthy or not", []*Endpoint{ep("a"), ep("b", serves("x")), ep("c", unhealthy)}, "m", []string{"a", "c"}, nil},
		{"unknown everywhere is 404", []*Endpoint{ep("a"), ep("b")}, "nope", nil, ErrModelNotServed},
		{"undiscovered endpoint may serve it: 503", []*Endpoint{ep("a"), ep("b", unknownModels)}, "nope", nil, ErrNoHealthyEndpoint},
		{"several models", []*Endpoint{ep("a", serves("x", "m")), ep("b", serves("x"))}, "x", []string{"a", "b"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ModelFilter{}.Filter(&Request{Model: tt.model}, tt.eps)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.ErrorIs(t, err, ErrNoEndpoint)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, names(got))
		})
	}
}

func TestHealthFilter(t *testing.T) {
	got, err := HealthFilter{}.Filter(&Request{}, []*Endpoint{ep("a", unhealthy), ep("b"), ep("c", unhealthy)})
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, names(got))
	_, err = HealthFilter{}.Filter(&Request{}, []*Endpoint{ep("a", unhealthy)})
	require.ErrorIs(t, err, ErrNoHealthyEndpoint)
}

func TestQueueScorer(t *testing.T) {
	tests := []struct {
		name string
		eps  []*Endpoint
		want []float64
	}{
		{"normalised over waiting plus in-flight", []*Endpoint{ep("a", waiting(0)), ep("b", waiting(2), inFlight(2)), ep("c", inFlight(2))}, []float64{1, 0, 0.5}},
		{"all equal all 1", []*Endpoint{ep("a", waiting(3)), ep("b", inFlight(3))}, []float64{1, 1}},
		{"stale is saturated", []*Endpoint{ep("a", stale), ep("b", waiting(5)), ep("c", waiting(1))}, []float64{0, 0, 1}},
		{"stale and otherwise idle still 0", []*Endpoint{ep("a", stale), ep("b", waiting(5))}, []float64{0, 1}},
		{"all stale: balance on in-flight", []*Endpoint{ep("a", stale, waiting(9), inFlight(1)), ep("b", stale, inFlight(3))}, []float64{1, 0}},
		{"all stale and idle: neutral", []*Endpoint{ep("a", stale), ep("b", stale)}, []float64{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make([]float64, len(tt.eps))
			QueueScorer{}.Score(&Request{}, tt.eps, got)
			require.InDeltaSlice(t, tt.want, got, 1e-12)
		})
	}
}

func TestKVCacheScorer(t *testing.T) {
	eps := []*Endpoint{ep("a", kv(0.25)), ep("b", kv(0)), ep("c", stale, kv(0)), ep("d", kv(1.7)), ep("e", kv(math.NaN()))}
	got := make([]float64, len(eps))
	KVCacheScorer{}.Score(&Request{}, eps, got)
	require.InDeltaSlice(t, []float64{0.75, 1, 0, 0, 1}, got, 1e-12)
}

func TestMaxScorePicker(t *testing.T) {
	eps := []*Endpoint{ep("a"), ep("b"), ep("c"), ep("d")}
	p := NewMaxScorePicker(rand.NewPCG(1, 2))
	require.Equal(t, "c", p.Pick(eps, []float64{0.1, 0.5, 0.9, 0.3}).Name)

	// Ties (within floating-point noise) are broken at random and reach every tied endpoint;
	// the lower score never wins.
	counts := map[string]int{}
	for range 300 {
		counts[p.Pick(eps, []float64{2, 2 + 1e-12, 1, 2}).Name]++
	}
	require.Len(t, counts, 3)
	require.Zero(t, counts["c"])
	for _, n := range counts {
		require.Greater(t, n, 50)
	}

	// Same seed, same choices.
	seq := func() []string {
		p := NewMaxScorePicker(rand.NewPCG(7, 7))
		var out []string
		for range 20 {
			out = append(out, p.Pick(eps, []float64{1, 1, 1, 1}).Name)
		}
		return out
	}
	require.Equal(t, seq(), seq())
}

// fixedScorer returns the scores in its map by endpoint name.
type fixedScorer map[string]float64

func (fixedScorer) Name() string { return "fixed" }
func (f fixedScorer) Score(_ *Request, eps []*Endpoint, scores []float64) {
	for i, e := range eps {
		scores[i] = f[e.Name]
	}
}

func TestSchedulerWeightedSum(t *testing.T) {
	eps := []*Endpoint{ep("a"), ep("b"), ep("c")}
	s1 := fixedScorer{"a": 1, "b": 0, "c": 0.4}
	s2 := fixedScorer{"a": 0, "b": 1, "c": 0.4}
	bad := fixedScorer{"a": 100, "b": math.NaN(), "c": -5}
	tests := []struct {
		name    string
		scorers []WeightedScorer
		want    string
	}{
		{"first weight wins", []WeightedScorer{{s1, 2}, {s2, 1}}, "a"},
		{"second weight wins", []WeightedScorer{{s1, 1}, {s2, 2}}, "b"},
		{"balanced favours the middle", []WeightedScorer{{s1, 1}, {s2, 1}, {fixedScorer{"c": 0.5}, 1}}, "c"},
		{"weight 0 disables", []WeightedScorer{{s1, 0}, {s2, 1}}, "b"},
		{"out-of-range scores are clamped", []WeightedScorer{{bad, 1}, {s2, 1.5}}, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewScheduler(nil, tt.scorers, NewMaxScorePicker(rand.NewPCG(1, 1)))
			got, err := s.Schedule(&Request{Model: "m"}, eps)
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Name)
		})
	}
}

func TestSchedulerErrorsAndExclusion(t *testing.T) {
	s := NewScheduler([]Filter{ModelFilter{}, HealthFilter{}}, nil, NewMaxScorePicker(rand.NewPCG(1, 1)))
	eps := []*Endpoint{ep("a", unhealthy), ep("b"), ep("c", serves("other"))}
	orig := names(eps)

	_, err := s.Schedule(&Request{Model: "nope"}, eps)
	require.ErrorIs(t, err, ErrModelNotServed)
	_, err = s.Schedule(&Request{Model: "other"}, []*Endpoint{ep("c", serves("other"), unhealthy)})
	require.ErrorIs(t, err, ErrNoHealthyEndpoint)

	got, err := s.Schedule(&Request{Model: "m"}, eps)
	require.NoError(t, err)
	require.Equal(t, "b", got.Name)
	_, err = s.Schedule(&Request{Model: "m", Exclude: []string{"b"}}, eps)
	require.ErrorIs(t, err, ErrNoHealthyEndpoint, "every candidate already tried")
	require.Equal(t, orig, names(eps), "the caller's slice is not reordered")
}

func TestBlockHashes(t *testing.T) {
	h := func(parts ...string) []uint64 { return BlockHashes(parts, 4) }
	require.Empty(t, h())
	require.Empty(t, h("", ""))
	require.Len(t, h("abcdefghij"), 3, "two full blocks and a short one")

	// A block hash covers its whole prefix: same prefix, same leading hashes; a change in an
	// early block changes every later hash even if the later bytes are equal.
	a, b := h("abcdefgh", "XYZW"), h("abcdefgh", "XYZWmore")
	require.Equal(t, a, b[:3])
	c := h("zbcdefgh", "XYZW")
	for i := range a {
		require.NotEqual(t, a[i], c[i], "block %d", i)
	}
	// Blocks never cross a part boundary.
	require.NotEqual(t, h("ab", "cd"), h("abcd"))
	require.Len(t, h("ab", "cd"), 2)
	// Chunking is by bytes; multi-byte runes may be cut, which is fine for hashing.
	require.Len(t, BlockHashes([]string{strings.Repeat("é", 4)}, 3), 3)
}

// chat renders messages as the router does: one "role: content\n" part per message.
func chat(msgs ...string) []string {
	parts := make([]string, len(msgs))
	for i, m := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		parts[i] = role + ": " + m + "\n"
	}
	return parts
}

func newDefaultScheduler(t testing.TB, blockChars, lruBlocks int, seed uint64) (*Scheduler, *PrefixScorer) {
	prefix, err := NewPrefixScorer(blockChars, lruBlocks)
	require.NoError(t, err)
	return NewScheduler([]Filter{ModelFilter{}, HealthFilter{}},
		[]WeightedScorer{{QueueScorer{}, 1}, {KVCacheScorer{}, 1}, {prefix, 3}},
		NewMaxScorePicker(rand.NewPCG(seed, seed))), prefix
}

// A multi-turn chat's turn 2 (turn 1 + answer + new message) lands on turn 1's replica when the
// replicas are otherwise idle, including a turn 1 shorter than one block.
func TestPrefixTurnTwoAffinity(t *testing.T) {
	answer := strings.Repeat("Here is a long and careful answer. ", 20)
	firsts := []string{
		"Hi!", // shorter than one block
		"Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences.",
		"Draft a professional email seeking your supervisor's feedback on the 'Quarterly Financial Report'.",
		strings.Repeat("A long system-like preamble. ", 40),
	}
	for seed := uint64(1); seed <= 5; seed++ {
		s, prefix := newDefaultScheduler(t, 64, 1024, seed)
		eps := []*Endpoint{ep("a"), ep("b"), ep("c")}
		used := map[string]bool{}
		for i, first := range firsts {
			r1 := &Request{Model: "m", PromptParts: chat(first)}
			e1, err := s.Schedule(r1, eps)
			require.NoError(t, err)
			used[e1.Name] = true
			r2 := &Request{Model: "m", PromptParts: chat(first, answer, "Now rephrase it.")}
			e2, err := s.Schedule(r2, eps)
			require.NoError(t, err)
			require.Equal(t, e1.Name, e2.Name, "seed %d conversation %d", seed, i)
			require.Positive(t, prefix.Blocks(e1.Name, &Request{PromptParts: chat(first)}))
		}
		require.Greater(t, len(used), 1, "seed %d: new conversations spread over idle replicas", seed)
	}
}

func TestPrefixScore(t *testing.T) {
	p, err := NewPrefixScorer(4, 100)
	require.NoError(t, err)
	eps := []*Endpoint{ep("a"), ep("b")}
	p.PreRequest(&Request{PromptParts: []string{"aaaabbbb"}}, eps[0])
	scores := make([]float64, 2)
	p.Score(&Request{PromptParts: []string{"aaaabbbbccccdddd"}}, eps, scores)
	require.Equal(t, []float64{0.5, 0}, scores)
	// Only the leading run counts: a later block alone is no prefix hit.
	scores = make([]float64, 2)
	p.Score(&Request{PromptParts: []string{"xxxxbbbb"}}, eps, scores)
	require.Equal(t, []float64{0, 0}, scores)
	// Empty prompt: no block, score 0.
	scores = make([]float64, 2)
	p.Score(&Request{}, eps, scores)
	require.Equal(t, []float64{0, 0}, scores)
	_, err = NewPrefixScorer(0, 1)
	require.Error(t, err)
}

func TestPrefixLRUEviction(t *testing.T) {
	p, err := NewPrefixScorer(4, 4) // four block hashes per endpoint
	require.NoError(t, err)
	e := ep("a")
	first := &Request{PromptParts: []string{"aaaabbbbcccc"}} // 3 blocks
	p.PreRequest(first, e)
	require.Equal(t, 3, p.Blocks("a", first))

	// Two more blocks evict the least recently used one. The tail was learned first, so the
	// prompt's head survives and the prefix is cut short rather than lost.
	p.PreRequest(&Request{PromptParts: []string{"xxxxyyyy"}}, e)
	require.Equal(t, 2, p.Blocks("a", first))

	// A fresh prompt that fills the cache evicts the old prompt entirely.
	p.PreRequest(&Request{PromptParts: []string{"11112222333344445555"}}, e)
	require.Zero(t, p.Blocks("a", first))

	// Re-learning refreshes it.
	p.PreRequest(first, e)
	require.Equal(t, 3, p.Blocks("a", first))
}

// The binary search in matched equals a linear walk: along a chain the blocks present form a
// prefix, whatever mix of shared prefixes was learned and evicted.
func TestPrefixMatchedIsALinearWalk(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	p, err := NewPrefixScorer(2, 40)
	require.NoError(t, err)
	e := ep("a")
	prompt := func() []string { // few letters, so prompts share prefixes of every length
		b := make([]byte, 2+rng.IntN(40))
		for i := range b {
			b[i] = "ab"[rng.IntN(2)]
		}
		return []string{string(b)}
	}
	for range 3000 {
		p.PreRequest(&Request{PromptParts: prompt()}, e)
		req := &Request{PromptParts: prompt()}
		linear := 0
		for _, h := range p.hashes(req) {
			if !p.cache("a").Contains(h) {
				break
			}
			linear++
		}
		require.Equal(t, linear, p.Blocks("a", req))
	}
}

// One scheduling decision over 16 endpoints for a 4 KB prompt that shares its first 2 KB with
// prompts learned on two endpoints, the scale of a small production pool.
func BenchmarkPick(b *testing.B) {
	const endpoints = 16
	s, _ := newDefaultScheduler(b, 64, 32768, 1)
	eps := make([]*Endpoint, endpoints)
	for i := range eps {
		eps[i] = ep(fmt.Sprintf("ep-%02d", i), waiting(i%4), inFlight(i%3), kv(float64(i)/endpoints))
	}
	shared := strings.Repeat("You are a helpful assistant. Answer briefly. ", 46)[:2048]
	rng := rand.New(rand.NewPCG(1, 1))
	tail := func() string {
		var sb strings.Builder
		for sb.Len() < 2048 {
			fmt.Fprintf(&sb, "%d ", rng.Uint64())
		}
		return sb.String()[:2048]
	}
	prompts := make([][]string, 256)
	for i := range prompts {
		prompts[i] = []string{"system: " + shared, "user: " + tail()}
	}
	for _, p := range prompts { // warm the LRUs: every endpoint holds the shared system prompt
		_, err := s.Schedule(&Request{Model: "m", PromptParts: p}, eps)
		require.NoError(b, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Schedule(&Request{Model: "m", PromptParts: prompts[i%len(prompts)]}, eps); err != nil {
			b.Fatal(err)
		}
	}
}
