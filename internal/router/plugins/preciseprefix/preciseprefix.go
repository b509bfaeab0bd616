// Package preciseprefix registers the "precise-prefix-cache-scorer" plugin (llm-d's name): a
// prefix-cache scorer fed by the engines' KV events, so it knows which blocks each endpoint
// really holds instead of guessing from where the router sent earlier prompts. See README.md.
package preciseprefix

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/strata-inference/strata/internal/router/kvindex"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = "precise-prefix-cache-scorer"

// Defaults of the parameters.
const (
	// DefaultBlockSizeTokens is vLLM's default --block-size.
	DefaultBlockSizeTokens = 16
	// DefaultMaxBlocksPerEndpoint bounds the index per endpoint: about 4M tokens of KV (an 8B
	// model's whole H100 KV cache is ~40k blocks of 16 tokens; the rest leaves room for a CPU
	// tier).
	DefaultMaxBlocksPerEndpoint = 1 << 18
)

// DefaultMediumWeights are the weights of a hit per medium, as llm-d's kv-cache indexer
// defaults its backends (gpu 1.0, cpu 0.8): a CPU-tier block must be copied back before use.
var DefaultMediumWeights = map[string]float64{scheduling.MediumGPU: 1, scheduling.MediumCPU: 0.8}

// Parameters of the plugin.
type Parameters struct {
	// BlockSizeTokens is the engines' KV block size in tokens (vLLM --block-size). Default 16.
	// KV events of another block size are ignored (logged once).
	BlockSizeTokens int `json:"blockSizeTokens"`
	// Tokenizer names the internal/tokenizer vocabulary ("llama-3", "qwen2") used to tokenize
	// requests that do not carry token ids (scheduling.Request.TokenIDs). Empty: such requests
	// score 0 (logged once).
	Tokenizer string `json:"tokenizer"`
	// MaxBlocksPerEndpoint bounds the index: engine blocks remembered per endpoint. Default 262144.
	MaxBlocksPerEndpoint int `json:"maxBlocksPerEndpoint"`
	// MediumWeights is the weight of a hit per KV medium ("GPU", "CPU", up to 4 media), each in
	// [0,1]. Default {GPU: 1, CPU: 0.8}. Events of other media are ignored.
	MediumWeights map[string]float64 `json:"mediumWeights"`
}

// Tokenizer is scheduling.Tokenizer, what the scorer uses of an internal/tokenizer.Tokenizer.
type Tokenizer = scheduling.Tokenizer

var (
	_ scheduling.Scorer         = (*Scorer)(nil)
	_ scheduling.KVEventHandler = (*Scorer)(nil)
	_ scheduling.Factory        = Factory
)

// Scorer is the precise prefix-cache scorer:
//
//	score = sum over the longest run of leading full blocks of the prompt that the endpoint
//	        holds (in any tracked medium) of the block's medium weight / full blocks in the prompt
//
// so 1 means every full block of the prompt is cached on the endpoint's GPU. The blocks come
// from KV events (HandleKVEvents), indexed by kvindex. The prompt's tokens are
// scheduling.Request.TokenIDs when set (replay), else the configured tokenizer's encoding of the
// chat template (EncodeChat with the generation prompt, as vLLM's chat endpoint) or of the
// completion prompt (BOS + text with special tokens, as vLLM's completion endpoint). It is safe
// for concurrent use, events included.
type Scorer struct {
	ix  *kvindex.Index
	tok Tokenizer
	log *slog.Logger
	// stateKey caches a request's keys; they depend only on the block size (and the request),
	// so instances of one block size share them.
	stateKey string

	noTokenizer, badBlockSize sync.Once
}

// Options are the resolved parameters of New.
type Options struct {
	BlockSizeTokens      int
	MaxBlocksPerEndpoint int
	MediumWeights        map[string]float64
	// Tokenizer may be nil: requests without token ids then score 0.
	Tokenizer Tokenizer
	// Log may be nil.
	Log *slog.Logger
}

// New returns a scorer. Errors name the invalid option as its parameter.
func New(o Options) (*Scorer, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MediumWeights == nil {
		o.MediumWeights = DefaultMediumWeights
	}
	names := make([]string, 0, len(o.MediumWeights))
	for n := range o.MediumWeights {
		names = append(names, n)
	}
	sort.Strings(names)
	media := make([]kvindex.Medium, 0, len(names))
	for _, n := range names {
		media = append(media, kvindex.Medium{Name: n, Weight: o.MediumWeights[n]})
	}
	switch {
	case o.BlockSizeTokens < 1:
		return nil, fmt.Errorf("parameters.blockSizeTokens: must be positive, got %d", o.BlockSizeTokens)
	case o.MaxBlocksPerEndpoint < 1:
		return nil, fmt.Errorf("parameters.maxBlocksPerEndpoint: must be positive, got %d", o.MaxBlocksPerEndpoint)
	case len(media) == 0 || len(media) > 4:
		return nil, fmt.Errorf("parameters.mediumWeights: want 1 to 4 media, got %d", len(media))
	}
	for _, m := range media {
		if m.Name == "" || !(m.Weight >= 0 && m.Weight <= 1) {
			return nil, fmt.Errorf("parameters.mediumWeights.%s: must be in [0, 1] under a non-empty medium name, got %g", m.Name, m.Weight)
		}
	}
	ix, err := kvindex.New(kvindex.Config{BlockSize: o.BlockSizeTokens, MaxBlocksPerEndpoint: o.MaxBlocksPerEndpoint, Media: media})
	if err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	return &Scorer{ix: ix, tok: o.Tokenizer, log: o.Log.With("plugin", Type), stateKey: fmt.Sprintf("%s/keys/%d", Type, o.BlockSizeTokens)}, nil
}

// Factory builds the scorer. Errors name the parameter, e.g. "parameters.tokenizer: unknown
// tokenizer \"llama-2\"" or "parameters.mediumWeights.CPU: must be in [0, 1] ...".
func Factory(_ string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
	p := Parameters{BlockSizeTokens: DefaultBlockSizeTokens, MaxBlocksPerEndpoint: DefaultMaxBlocksPerEndpoint}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	o := Options{BlockSizeTokens: p.BlockSizeTokens, MaxBlocksPerEndpoint: p.MaxBlocksPerEndpoint,
		MediumWeights: p.MediumWeights, Log: h.Logger()}
	if p.MediumWeights != nil && len(p.MediumWeights) == 0 {
		return nil, errors.New("parameters.mediumWeights: want 1 to 4 media, got 0")
	}
	if p.Tokenizer != "" {
		t, err := loadTokenizer(p.Tokenizer)
		if err != nil {
			return nil, fmt.Errorf("parameters.tokenizer: %w", err)
		}
		o.Tokenizer = t
	}
	return New(o)
}

// Name returns Type.
func (*Scorer) Name() string { return Type }

// Index returns the scorer's block index (for tests, diagnostics and benchmarks).
func (s *Scorer) Index() *kvindex.Index { return s.ix }

// HandleKVEvents implements scheduling.KVEventHandler.
func (s *Scorer) HandleKVEvents(endpoint string, events []scheduling.KVEvent) {
	for i := range events {
		if ev := &events[i]; ev.Kind == scheduling.BlockStored && ev.BlockSize != s.ix.BlockSize() {
			s.badBlockSize.Do(func() {
				s.log.Warn("kv events of another block size are ignored; set blockSizeTokens to the engines' --block-size",
					"endpoint", endpoint, "event_block_size", ev.BlockSize, "blockSizeTokens", s.ix.BlockSize())
			})
			break
		}
	}
	s.ix.Apply(endpoint, events)
}

// Score implements scheduling.Scorer.
func (s *Scorer) Score(req *scheduling.Request, eps []*scheduling.Endpoint, scores []float64) {
	keys := s.keys(req)
	if len(keys) == 0 {
		return
	}
	var small [256]string
	names := small[:0]
	if len(eps) > len(small) {
		names = make([]string, 0, len(eps))
	}
	for _, e := range eps {
		names = append(names, e.Name)
	}
	s.ix.Score(keys, names, scores)
}

// Blocks returns how many leading full blocks of req's prompt the endpoint named endpoint holds
// (in any medium), the capability the no-hit-LRU scorer reads of a prefix scorer.
func (s *Scorer) Blocks(endpoint string, req *scheduling.Request) int {
	return s.ix.Run(s.keys(req), endpoint)
}

// keys returns the request's block keys, computed once per request.
func (s *Scorer) keys(req *scheduling.Request) []uint64 {
	if v, ok := req.Read(s.stateKey); ok {
		return v.([]uint64)
	}
	keys := s.ix.Keys(s.tokens(req), req.LoRA, nil)
	req.Write(s.stateKey, keys)
	return keys
}

func (s *Scorer) tokens(req *scheduling.Request) []int {
	if req.TokenIDs == nil && s.tok == nil {
		s.noTokenizer.Do(func() {
			s.log.Warn("requests without token ids score 0: no tokenizer configured (parameters.tokenizer)")
		})
		return nil
	}
	return scheduling.PromptTokens(req, s.tok)
}
