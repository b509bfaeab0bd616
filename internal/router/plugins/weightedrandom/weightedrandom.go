// Package weightedrandom registers the "weighted-random-picker" plugin: it picks an endpoint with
// probability proportional to its weighted score. See README.md.
package weightedrandom

import (
	"encoding/json"
	"math/rand/v2"
	"sync"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = "weighted-random-picker"

var (
	_ scheduling.Picker  = (*Picker)(nil)
	_ scheduling.Factory = Factory
)

// Picker draws eps[i] with probability scores[i] / Σ scores; when every score is 0 it draws
// uniformly. Randomising in proportion to the score spreads a burst of similar requests instead
// of sending all of them to the one best endpoint. Safe for concurrent use.
type Picker struct {
	mu  sync.Mutex
	rng *rand.Rand
}

// Factory builds the picker with h.Rand(); it takes no parameters.
func Factory(_ string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return New(h.Rand()), nil
}

// New returns a picker drawing from src.
func New(src rand.Source) *Picker { return &Picker{rng: rand.New(src)} }

// Name returns Type.
func (*Picker) Name() string { return Type }

// Pick implements scheduling.Picker.
func (p *Picker) Pick(eps []*scheduling.Endpoint, scores []float64) *scheduling.Endpoint {
	sum := 0.0
	for _, s := range scores {
		sum += max(s, 0)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !(sum > 0) {
		return eps[p.rng.IntN(len(eps))]
	}
	x := p.rng.Float64() * sum
	for i, s := range scores {
		x -= max(s, 0)
		if x < 0 {
			return eps[i]
		}
	}
	for i := len(scores) - 1; i >= 0; i-- { // rounding left x >= 0: the last positive one
		if scores[i] > 0 {
			return eps[i]
		}
	}
	return eps[len(eps)-1]
}
