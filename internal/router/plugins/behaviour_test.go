package plugins

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/router/plugins/inflighttokens"
	"github.com/strata-inference/strata/internal/router/plugins/nohitlru"
	"github.com/strata-inference/strata/internal/router/plugins/poweroftwo"
	"github.com/strata-inference/strata/internal/router/plugins/predictedlatency"
	"github.com/strata-inference/strata/internal/router/plugins/randompicker"
	"github.com/strata-inference/strata/internal/router/plugins/roundrobin"
	"github.com/strata-inference/strata/internal/router/plugins/runningrequests"
	"github.com/strata-inference/strata/internal/router/plugins/sessionaffinity"
	"github.com/strata-inference/strata/internal/router/plugins/weightedrandom"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

func eps(names ...string) []*scheduling.Endpoint {
	out := make([]*scheduling.Endpoint, len(names))
	for i, n := range names {
		out[i] = &scheduling.Endpoint{Name: n, Models: []string{"m"}, ModelsKnown: true, Healthy: true}
	}
	return out
}

func score(s scheduling.Scorer, req *scheduling.Request, e []*scheduling.Endpoint) []float64 {
	out := make([]float64, len(e))
	s.Score(req, e, out)
	return out
}

func TestRunningRequestsScorer(t *testing.T) {
	e := eps("a", "b", "c")
	e[0].Metrics.Running, e[1].Metrics.Running, e[2].Metrics.Running = 4, 0, 2
	e[1].InFlight = 2 // b: 0 running + 2 in flight = 2
	require.InDeltaSlice(t, []float64{0, 1, 1}, score(runningrequests.Scorer{}, &scheduling.Request{}, e), 1e-12)
	e[2].Stale = true
	require.InDeltaSlice(t, []float64{0, 1, 0}, score(runningrequests.Scorer{}, &scheduling.Request{}, e), 1e-12)
	for _, x := range e {
		x.Stale = true
	}
	require.InDeltaSlice(t, []float64{1, 0, 1}, score(runningrequests.Scorer{}, &scheduling.Request{}, e), 1e-12, "all stale: in-flight only")
}

func TestInFlightTokensScorer(t *testing.T) {
	e := eps("a", "b", "c")
	e[0].InFlightTokens, e[1].InFlightTokens, e[2].InFlightTokens = 30000, 0, 15000
	e[0].Stale = true // never stale: the router's own count
	require.InDeltaSlice(t, []float64{0, 1, 0.5}, score(inflighttokens.Scorer{}, &scheduling.Request{}, e), 1e-12)
}

func TestSessionAffinity(t *testing.T) {
	s := sessionaffinity.New(2)
	e := eps("a", "b", "c")
	req := &scheduling.Request{Session: "conv-1"}
	require.Equal(t, []float64{0, 0, 0}, score(s, req, e), "new session: neutral")
	s.PreRequest(req, e[2])
	require.Equal(t, []float64{0, 0, 1}, score(s, req, e))
	require.Equal(t, []float64{0, 0, 0}, score(s, &scheduling.Request{}, e), "no session: neutral")
	s.PreRequest(&scheduling.Request{}, e[0]) // no session: nothing recorded
	// The LRU forgets the oldest session.
	s.PreRequest(&scheduling.Request{Session: "conv-2"}, e[0])
	s.PreRequest(&scheduling.Request{Session: "conv-3"}, e[1])
	require.Equal(t, []float64{0, 0, 0}, score(s, req, e))
	require.Equal(t, []float64{0, 1, 0}, score(s, &scheduling.Request{Session: "conv-3"}, e))
}

func TestNoHitLRU(t *testing.T) {
	prefix, err := scheduling.NewPrefixScorer(8, 1024)
	require.NoError(t, err)
	s := nohitlru.New(prefix)
	e := eps("a", "b", "c")
	cold := func(text string) *scheduling.Request { return &scheduling.Request{PromptParts: []string{text}} }
	// Three cold requests in a row, each placed by the scorer alone, visit every endpoint.
	var got []string
	for _, text := range []string{"first prompt", "second prompt", "third prompt"} {
		req := cold(text)
		sc := score(s, req, e)
		best := 0
		for i := range sc {
			if sc[i] > sc[best] {
				best = i
			}
		}
		s.PreRequest(req, e[best])
		prefix.PreRequest(req, e[best])
		got = append(got, e[best].Name)
	}
	require.ElementsMatch(t, []string{"a", "b", "c"}, got)
	// A warm request (its prefix is on some endpoint) is neutral and does not move the LRU.
	warm := cold("first prompt, continued")
	require.Equal(t, []float64{0, 0, 0}, score(s, warm, e))
	// The next cold request goes to the endpoint that got a cold request longest ago.
	sc := score(s, cold("fourth"), e)
	require.Equal(t, 1.0, sc[indexOf(e, got[0])])
	require.Equal(t, 0.0, sc[indexOf(e, got[2])])
}

func indexOf(e []*scheduling.Endpoint, name string) int {
	for i, x := range e {
		if x.Name == name {
			return i
		}
	}
	return -1
}

func TestPickers(t *testing.T) {
	e := eps("a", "b", "c", "d")
	count := func(p scheduling.Picker, scores []float64) map[string]int {
		m := map[string]int{}
		for range 4000 {
			m[p.Pick(e, scores).Name]++
		}
		return m
	}
	t.Run("round-robin cycles", func(t *testing.T) {
		p := &roundrobin.Picker{}
		var got []string
		for range 6 {
			got = append(got, p.Pick(e, []float64{9, 0, 0, 0}).Name)
		}
		require.Equal(t, []string{"a", "b", "c", "d", "a", "b"}, got)
	})
	t.Run("random reaches all", func(t *testing.T) {
		p, err := randompicker.Factory("r", nil, nopHandle{})
		require.NoError(t, err)
		m := count(p.(scheduling.Picker), []float64{9, 0, 0, 0})
		require.Len(t, m, 4)
	})
	t.Run("weighted random is proportional, never zero", func(t *testing.T) {
		m := count(weightedrandom.New(rand.NewPCG(5, 6)), []float64{3, 1, 0, 0})
		require.Zero(t, m["c"]+m["d"])
		require.Greater(t, m["a"], 2*m["b"]) // expected 3:1
		m = count(weightedrandom.New(rand.NewPCG(5, 6)), []float64{0, 0, 0, 0})
		require.Len(t, m, 4, "all zero: uniform")
	})
	t.Run("power of two never picks the worst", func(t *testing.T) {
		m := count(poweroftwo.New(rand.NewPCG(7, 8)), []float64{4, 3, 2, 1})
		require.Zero(t, m["d"])
		require.Greater(t, m["a"], m["b"])
		require.Greater(t, m["b"], m["c"])
		one := eps("solo")
		require.Equal(t, "solo", poweroftwo.New(rand.NewPCG(1, 1)).Pick(one, []float64{0}).Name)
	})
}

// Work = in-flight prompt tokens + uncached prompt tokens: a cached prefix wins while it saves
// more prefill than its endpoint has queued, and loses once the queue there is longer.
func TestPredictedLatency(t *testing.T) {
	prefix, err := scheduling.NewPrefixScorer(8, 1024)
	require.NoError(t, err)
	s := predictedlatency.New(prefix)
	e := eps("a", "b")
	warm := &scheduling.Request{PromptParts: []string{"0123456789abcdef"}, PromptTokens: 1000}
	prefix.PreRequest(&scheduling.Request{PromptParts: warm.PromptParts}, e[0]) // a holds the whole prompt
	e[0].InFlightTokens, e[1].InFlightTokens = 500, 0                           // a: 500 + 0, b: 0 + 1000
	require.Equal(t, []float64{1, 0}, score(s, warm, e))
	e[0].InFlightTokens = 1500 // a: 1500 + 0, b: 0 + 1000
	require.Equal(t, []float64{0, 1}, score(s, &scheduling.Request{PromptParts: warm.PromptParts, PromptTokens: 1000}, e))
	e[0].InFlightTokens = 1000
	require.Equal(t, []float64{1, 1}, score(s, &scheduling.Request{PromptParts: warm.PromptParts, PromptTokens: 1000}, e))

	_, err = Registry()["predicted-latency-scorer"]("p", nil, nopHandle{})
	require.EqualError(t, err, `parameters.prefixPluginName: no plugin "prefix-cache-scorer" declared before this one`)
}
