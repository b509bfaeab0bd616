// Package randompicker registers the "random-picker" plugin: it ignores scores and picks a
// candidate uniformly at random, a baseline for `strata replay`. See README.md.
package randompicker

import (
	"encoding/json"
	"math/rand/v2"
	"sync"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = "random-picker"

var (
	_ scheduling.Picker  = (*Picker)(nil)
	_ scheduling.Factory = Factory
)

// Picker picks uniformly at random; scores are ignored. Safe for concurrent use.
type Picker struct {
	mu  sync.Mutex
	rng *rand.Rand
}

// Factory builds the picker with h.Rand(); it takes no parameters.
func Factory(_ string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return &Picker{rng: rand.New(h.Rand())}, nil
}

// Name returns Type.
func (*Picker) Name() string { return Type }

// Pick implements scheduling.Picker.
func (p *Picker) Pick(eps []*scheduling.Endpoint, _ []float64) *scheduling.Endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return eps[p.rng.IntN(len(eps))]
}
