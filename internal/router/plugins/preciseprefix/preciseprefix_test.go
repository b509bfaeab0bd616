package preciseprefix

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

const bs = 16

func newScorer(t testing.TB, tok Tokenizer, log *slog.Logger) *Scorer {
	t.Helper()
	s, err := New(Options{BlockSizeTokens: bs, MaxBlocksPerEndpoint: 1 << 20, Tokenizer: tok, Log: log})
	require.NoError(t, err)
	return s
}

func tokens(start, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = start + i
	}
	return out
}

// storedChain is the BlockStored of tokens (whole blocks) with engine hashes from seed up.
func storedChain(toks []int, seed uint64) scheduling.KVEvent {
	ev := scheduling.KVEvent{Kind: scheduling.BlockStored, TokenIDs: toks, BlockSize: bs}
	for i := range len(toks) / bs {
		ev.BlockHashes = append(ev.BlockHashes, seed+uint64(i))
	}
	return ev
}

func endpoints(names ...string) []*scheduling.Endpoint {
	out := make([]*scheduling.Endpoint, len(names))
	for i, n := range names {
		out[i] = &scheduling.Endpoint{Name: n, Models: []string{"m"}, ModelsKnown: true, Healthy: true}
	}
	return out
}

func TestPicksTheEndpointHoldingThePrompt(t *testing.T) {
	p := newScorer(t, nil, nil)
	s := scheduling.NewScheduler(nil, []scheduling.WeightedScorer{{Scorer: p, Weight: 1}}, scheduling.NewMaxScorePicker(rand.NewPCG(1, 1)))
	prompt := tokens(1000, 10*bs+5)
	// a holds the first 4 blocks; b the whole prompt, under other engine hashes (another seed).
	s.HandleKVEvents("a", []scheduling.KVEvent{storedChain(prompt[:4*bs], 1)})
	s.HandleKVEvents("b", []scheduling.KVEvent{storedChain(prompt[:10*bs], 500)})
	eps := endpoints("a", "b", "c")
	for range 10 {
		got, err := s.Schedule(&scheduling.Request{Model: "m", TokenIDs: prompt}, eps)
		require.NoError(t, err)
		require.Equal(t, "b", got.Name)
	}
	scores := make([]float64, 3)
	p.Score(&scheduling.Request{TokenIDs: prompt}, eps, scores)
	require.Equal(t, []float64{0.4, 1, 0}, scores)

	// b evicts its blocks; a now wins.
	s.HandleKVEvents("b", []scheduling.KVEvent{{Kind: scheduling.AllBlocksCleared}})
	got, err := s.Schedule(&scheduling.Request{Model: "m", TokenIDs: prompt}, eps)
	require.NoError(t, err)
	require.Equal(t, "a", got.Name)
}

// fakeTokenizer tokenizes one token per byte, with chat messages rendered as "role:content;".
type fakeTokenizer struct{}

func (fakeTokenizer) EncodeSpecial(text string) []int {
	out := make([]int, len(text))
	for i := range len(text) {
		out[i] = int(text[i])
	}
	return out
}

func (f fakeTokenizer) EncodeChat(msgs []openai.Message, _ bool) []int {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "%s:%s;", m.Role, m.ContentText())
	}
	return append([]int{1}, f.EncodeSpecial(b.String())...)
}

func (fakeTokenizer) BOS() (int, bool) { return 1, true }
func (fakeTokenizer) Name() string     { return "fake" }

func TestTokenizesRequestsWithoutTokenIDs(t *testing.T) {
	p := newScorer(t, fakeTokenizer{}, nil)
	text := strings.Repeat("abcdefgh", 8) // 64 bytes: with BOS, 4 full blocks and a partial one
	p.HandleKVEvents("a", []scheduling.KVEvent{storedChain(append([]int{1}, fakeTokenizer{}.EncodeSpecial(text)[:4*bs-1]...), 1)})
	scores := make([]float64, 1)
	p.Score(&scheduling.Request{Prompt: text}, endpoints("a"), scores)
	require.Equal(t, []float64{1}, scores)

	msgs := []openai.Message{{Role: "user", Content: openai.TextContent(text)}}
	chat := fakeTokenizer{}.EncodeChat(msgs, true)
	p.HandleKVEvents("b", []scheduling.KVEvent{storedChain(chat[:2*bs], 100)})
	scores = make([]float64, 2)
	p.Score(&scheduling.Request{Messages: msgs}, endpoints("a", "b"), scores)
	require.Equal(t, []float64{0, 0.5}, scores)
}

func TestWithoutTokenizerScoresZeroAndSaysSoOnce(t *testing.T) {
	var buf bytes.Buffer
	p := newScorer(t, nil, slog.New(slog.NewTextHandler(&buf, nil)))
	p.HandleKVEvents("a", []scheduling.KVEvent{storedChain(tokens(0, bs), 1)})
	scores := make([]float64, 1)
	for range 3 {
		p.Score(&scheduling.Request{Prompt: "some prompt"}, endpoints("a"), scores)
		require.Equal(t, []float64{0}, scores)
	}
	require.Equal(t, 1, strings.Count(buf.String(), "no tokenizer configured"), buf.String())

	// Events of another block size are logged once too.
	ev := storedChain(tokens(0, 32), 1)
	ev.BlockSize = 32
	p.HandleKVEvents("a", []scheduling.KVEvent{ev})
	p.HandleKVEvents("a", []scheduling.KVEvent{ev})
	require.Equal(t, 1, strings.Count(buf.String(), "another block size"), buf.String())
}

func TestFactory(t *testing.T) {
	h := handle{}
	for _, tc := range []struct{ params, err string }{
		{`{}`, ""},
		{`{"blockSizeTokens":32,"maxBlocksPerEndpoint":10,"mediumWeights":{"GPU":1,"CPU":0.5,"DISK":0.1}}`, ""},
		{`{"blockSizeTokens":0}`, "parameters.blockSizeTokens: must be positive, got 0"},
		{`{"maxBlocksPerEndpoint":-1}`, "parameters.maxBlocksPerEndpoint: must be positive, got -1"},
		{`{"mediumWeights":{"CPU":1.5}}`, "parameters.mediumWeights.CPU: must be in [0, 1]"},
		{`{"mediumWeights":{}}`, "parameters.mediumWeights: want 1 to 4 media, got 0"},
		{`{"mediumWeights":{"A":1,"B":1,"C":1,"D":1,"E":1}}`, "parameters.mediumWeights: want 1 to 4 media, got 5"},
		{`{"tokenizer":"no-such-vocabulary"}`, `parameters.tokenizer: tokenizer: unknown tokenizer "no-such-vocabulary"`},
		{`{"tokenizer":"llama-3"}`, ""},
		{`{"blockSize":16}`, `parameters: unknown field "blockSize"`},
	} {
		t.Run(tc.params, func(t *testing.T) {
			p, err := Factory("x", json.RawMessage(tc.params), h)
			if tc.err == "" {
				require.NoError(t, err)
				require.Equal(t, Type, p.Name())
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
}

type handle struct{}

func (handle) Plugin(string) (scheduling.Plugin, bool) { return nil, false }
func (handle) Rand() rand.Source                       { return rand.NewPCG(1, 1) }
func (handle) Logger() *slog.Logger                    { return slog.New(slog.DiscardHandler) }

// Events of several endpoints arrive while requests are scored: run with -race.
func TestEventsConcurrentWithPicks(t *testing.T) {
	p := newScorer(t, nil, nil)
	eps := endpoints("a", "b", "c", "d")
	prompt := tokens(0, 32*bs)
	var wg sync.WaitGroup
	for i, e := range eps {
		wg.Go(func() {
			for r := range 200 {
				ev := storedChain(prompt[:(1+r%32)*bs], uint64(i*1_000_000+r*100))
				p.HandleKVEvents(e.Name, []scheduling.KVEvent{ev})
				if r%7 == 0 {
					p.HandleKVEvents(e.Name, []scheduling.KVEvent{{Kind: scheduling.AllBlocksCleared}})
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			scores := make([]float64, len(eps))
			for range 500 {
				p.Score(&scheduling.Request{TokenIDs: prompt}, eps, scores)
				for _, v := range scores {
					require.True(t, v >= 0 && v <= 1, "score %g", v)
				}
			}
		})
	}
	wg.Wait()
}

// With the real Llama-3 tokenizer, a chat request scores 1 on the endpoint whose events carry
// the tokens vLLM computes for it (chat template, generation prompt, BOS).
func TestRealTokenizer(t *testing.T) {
	p, err := Factory("x", json.RawMessage(`{"tokenizer":"llama-3"}`), handle{})
	require.NoError(t, err)
	s := p.(*Scorer)
	msgs := []openai.Message{
		{Role: "system", Content: openai.TextContent(strings.Repeat("You are a careful assistant. ", 20))},
		{Role: "user", Content: openai.TextContent("Summarise the plot of Hamlet.")},
	}
	tok, err := loadTokenizer("llama-3")
	require.NoError(t, err)
	ids := tok.EncodeChat(msgs, true)
	full := len(ids) / bs * bs
	require.Positive(t, full)
	s.HandleKVEvents("a", []scheduling.KVEvent{storedChain(ids[:full], 1)})
	scores := make([]float64, 2)
	s.Score(&scheduling.Request{Messages: msgs}, endpoints("a", "b"), scores)
	require.Equal(t, []float64{1, 0}, scores)
}

func TestBlocks(t *testing.T) {
	p := newScorer(t, nil, nil)
	prompt := tokens(0, 5*bs+3)
	p.HandleKVEvents("a", []scheduling.KVEvent{storedChain(prompt[:3*bs], 1)})
	cpu := storedChain(prompt[3*bs:4*bs], 10)
	cpu.HasParent, cpu.ParentHash, cpu.Medium = true, 3, scheduling.MediumCPU
	p.HandleKVEvents("a", []scheduling.KVEvent{cpu})
	req := &scheduling.Request{TokenIDs: prompt}
	require.Equal(t, 4, p.Blocks("a", req), "3 GPU blocks and a CPU one")
	require.Zero(t, p.Blocks("b", req))
}
