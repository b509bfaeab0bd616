// Package runningrequests registers the "running-requests-scorer" plugin: it prefers endpoints
// with few requests in the engine's running batch (vllm:num_requests_running). See README.md.
package runningrequests

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = "running-requests-scorer"

var (
	_ scheduling.Scorer  = (*Scorer)(nil)
	_ scheduling.Factory = Factory
)

// Scorer scores running = vllm:num_requests_running (scraped) plus the router's in-flight
// requests, min-max normalised across the candidates (lower is better; all equal: 1). Stale
// endpoints score 0, unless every candidate is stale: then it balances on in-flight alone.
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
	anyFresh := false
	for _, e := range eps {
		anyFresh = anyFresh || !e.Stale
	}
	vals, ok := make([]float64, len(eps)), make([]bool, len(eps))
	for i, e := range eps {
		ok[i] = !anyFresh || !e.Stale
		vals[i] = float64(e.InFlight)
		if anyFresh {
			vals[i] += float64(e.Metrics.Running)
		}
	}
	scheduling.MinMaxLowerIsBetter(vals, ok, scores)
}
