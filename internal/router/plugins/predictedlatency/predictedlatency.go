// Package predictedlatency registers the "predicted-latency-scorer" plugin: it prefers the
// endpoint where the request's first token is expected soonest, weighing the prefill work queued
// there against the prefill the request itself would save by hitting its prefix there. See
// README.md.
package predictedlatency

import (
	"encoding/json"
	"fmt"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = "predicted-latency-scorer"

// Parameters of the plugin.
type Parameters struct {
	// PrefixPluginName names the prefix-cache-scorer instance whose score estimates the fraction
	// of the prompt cached on each endpoint; it must be declared before this plugin. Default
	// "prefix-cache-scorer".
	PrefixPluginName string `json:"prefixPluginName"`
}

var (
	_ scheduling.Scorer  = (*Scorer)(nil)
	_ scheduling.Factory = Factory
)

// Scorer estimates, per endpoint, the prefill work (in tokens) ahead of the request's first
// token:
//
//	work = in-flight prompt tokens (the router's own count) + prompt tokens × (1 − prefix score)
//
// and scores it min-max normalised, lower is better. Prefill is compute-bound, so on equal
// GPUs TTFT grows with this work; the unit is the same on both sides, so a long cached prefix
// wins exactly when it saves more prefill than the endpoint has queued. It is a first cut of
// issue 4's predicted-latency scorer: it assumes equal prefill rates (no measured per-endpoint
// rate yet) and counts a request's prompt in flight until it finishes, also while it decodes.
type Scorer struct {
	prefix scheduling.Scorer
}

// Factory builds the scorer. Errors: `parameters.prefixPluginName: no plugin "x" declared
// before this one` and `parameters.prefixPluginName: "x" is a <type>, not a prefix-cache-scorer`.
func Factory(_ string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
	p := Parameters{PrefixPluginName: "prefix-cache-scorer"}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	pl, ok := h.Plugin(p.PrefixPluginName)
	if !ok {
		return nil, fmt.Errorf("parameters.prefixPluginName: no plugin %q declared before this one", p.PrefixPluginName)
	}
	ps, ok := pl.(scheduling.Scorer)
	if !ok || (pl.Name() != "prefix-cache-scorer" && pl.Name() != "precise-prefix-cache-scorer") {
		return nil, fmt.Errorf("parameters.prefixPluginName: %q is a %s, not a prefix-cache-scorer", p.PrefixPluginName, pl.Name())
	}
	return New(ps), nil
}

// New returns a scorer estimating cached fractions with prefix: a prefix-cache-scorer
// (scheduling.PrefixScorer) or a precise-prefix-cache-scorer, whose score is the cached
// fraction of the prompt.
func New(prefix scheduling.Scorer) *Scorer { return &Scorer{prefix: prefix} }

// Name returns Type.
func (*Scorer) Name() string { return Type }

// Score implements scheduling.Scorer.
func (s *Scorer) Score(req *scheduling.Request, eps []*scheduling.Endpoint, scores []float64) {
	hit := make([]float64, len(eps))
	s.prefix.Score(req, eps, hit) // block hashes are cached in req: cheap after the prefix scorer
	work, ok := make([]float64, len(eps)), make([]bool, len(eps))
	for i, e := range eps {
		work[i] = float64(e.InFlightTokens) + float64(req.PromptTokens)*(1-min(max(hit[i], 0), 1))
		ok[i] = true
	}
	scheduling.MinMaxLowerIsBetter(work, ok, scores)
}
