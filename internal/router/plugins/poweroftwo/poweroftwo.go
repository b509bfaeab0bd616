// Package poweroftwo registers the "power-of-two-choices-picker" plugin: it samples two
// candidates at random and keeps the higher-scored one. See README.md.
package poweroftwo

import (
	"encoding/json"
	"math/rand/v2"
	"sync"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = "power-of-two-choices-picker"

var (
	_ scheduling.Picker  = (*Picker)(nil)
	_ scheduling.Factory = Factory
)

// Picker samples two distinct candidates uniformly and returns the one with the higher weighted
// score (a tie: either, at random). Mitzenmacher's power of two choices: the maximum load drops
// from O(log n / log log n) to O(log log n) compared with one random choice, while the herd
// behaviour of always taking the single best endpoint on stale data is avoided. Safe for
// concurrent use.
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
	if len(eps) == 1 {
		return eps[0]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i := p.rng.IntN(len(eps))
	j := p.rng.IntN(len(eps) - 1)
	if j >= i {
		j++
	}
	switch {
	case scores[i] > scores[j]:
		return eps[i]
	case scores[j] > scores[i]:
		return eps[j]
	case p.rng.IntN(2) == 0:
		return eps[i]
	}
	return eps[j]
}
