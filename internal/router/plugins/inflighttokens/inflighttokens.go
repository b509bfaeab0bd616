// Package inflighttokens registers the "in-flight-tokens-scorer" plugin: it prefers endpoints
// with few prompt tokens sent by this router and not yet finished. See README.md.
package inflighttokens

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = "in-flight-tokens-scorer"

var (
	_ scheduling.Scorer  = (*Scorer)(nil)
	_ scheduling.Factory = Factory
)

// Scorer scores the router's in-flight prompt tokens per endpoint (Endpoint.InFlightTokens,
// exact at decision time, never stale), min-max normalised across the candidates: (max - v) /
// (max - min), 1 for all when equal. Unlike request counts it weighs a 30k-token prompt as the
// prefill work it is.
type Scorer struct{}

// Factory builds the scorer; it takes no parameters.
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return Scorer{}, nil
}

// Name returns Type.
func (Scorer) Name() string { return Type }

// Score implements scheduling.Scorer.
func (Scorer) Score(_ *scheduling.Request, eps []*scheduling.Endpoint, scores []float64) {
	vals, ok := make([]float64, len(eps)), make([]bool, len(eps))
	for i, e := range eps {
		vals[i], ok[i] = float64(e.InFlightTokens), true
	}
	scheduling.MinMaxLowerIsBetter(vals, ok, scores)
}
