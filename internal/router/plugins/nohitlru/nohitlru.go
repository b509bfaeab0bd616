// Package nohitlru registers the "no-hit-lru-scorer" plugin: a request that hits no prefix
// anywhere (a cold request) goes to the endpoint that least recently received a cold request, so
// new conversations spread over the replicas instead of piling onto the momentarily emptiest one.
// See README.md.
package nohitlru

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = "no-hit-lru-scorer"

// Parameters of the plugin.
type Parameters struct {
	// PrefixPluginName names the prefix-cache-scorer (or precise-prefix-cache-scorer) instance
	// that decides whether a request is cold; it must be declared before this plugin. Default
	// "prefix-cache-scorer".
	PrefixPluginName string `json:"prefixPluginName"`
}

// prefixMatcher is what the scorer needs of the prefix plugin: how many leading blocks of req an
// endpoint holds (scheduling.PrefixScorer.Blocks, preciseprefix.Scorer.Blocks).
type prefixMatcher interface {
	Blocks(endpoint string, req *scheduling.Request) int
}

var (
	_ scheduling.Scorer     = (*Scorer)(nil)
	_ scheduling.PreRequest = (*Scorer)(nil)
	_ scheduling.Factory    = Factory
	_ prefixMatcher         = (*scheduling.PrefixScorer)(nil)
)

// Scorer scores cold requests only, by the sequence number of each endpoint's last cold request
// (never = 0), min-max normalised with lower better: the least recently used endpoint scores 1,
// the most recent 0, the others linearly in between.
// Requests with a prefix hit somewhere score 0 everywhere (neutral), leaving them to the prefix
// scorer. It is safe for concurrent use.
type Scorer struct {
	prefix prefixMatcher

	mu    sync.Mutex
	last  map[string]uint64 // endpoint -> sequence number of its last cold request
	clock uint64
}

const coldKey = Type + "/cold"

// Factory builds the scorer. Errors: `parameters.prefixPluginName: no plugin "x" declared
// before this one` and `parameters.prefixPluginName: "x" is not a prefix-cache-scorer`.
func Factory(_ string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
	p := Parameters{PrefixPluginName: "prefix-cache-scorer"}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	pl, ok := h.Plugin(p.PrefixPluginName)
	if !ok {
		return nil, fmt.Errorf("parameters.prefixPluginName: no plugin %q declared before this one", p.PrefixPluginName)
	}
	m, ok := pl.(prefixMatcher)
	if !ok {
		return nil, fmt.Errorf("parameters.prefixPluginName: %q is a %s, not a prefix-cache-scorer", p.PrefixPluginName, pl.Name())
	}
	return New(m), nil
}

// New returns a scorer deciding coldness with prefix.
func New(prefix prefixMatcher) *Scorer {
	return &Scorer{prefix: prefix, last: map[string]uint64{}}
}

// Name returns Type.
func (*Scorer) Name() string { return Type }

// Score implements scheduling.Scorer.
func (s *Scorer) Score(req *scheduling.Request, eps []*scheduling.Endpoint, scores []float64) {
	for _, e := range eps {
		if s.prefix.Blocks(e.Name, req) > 0 {
			req.Write(coldKey, false)
			return
		}
	}
	req.Write(coldKey, true)
	s.mu.Lock()
	defer s.mu.Unlock()
	vals, ok := make([]float64, len(eps)), make([]bool, len(eps))
	for i, e := range eps {
		vals[i], ok[i] = float64(s.last[e.Name]), true
	}
	scheduling.MinMaxLowerIsBetter(vals, ok, scores)
}

// PreRequest records a cold request's endpoint as the most recently used.
func (s *Scorer) PreRequest(req *scheduling.Request, picked *scheduling.Endpoint) {
	if cold, _ := req.Read(coldKey); cold != true {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock++
	s.last[picked.Name] = s.clock
}
