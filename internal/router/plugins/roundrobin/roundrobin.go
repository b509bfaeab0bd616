// Package roundrobin registers the "round-robin-picker" plugin: it ignores scores and cycles
// through the candidates, a baseline for `strata replay`. See README.md.
package roundrobin

import (
	"encoding/json"
	"sync/atomic"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = "round-robin-picker"

var (
	_ scheduling.Picker  = (*Picker)(nil)
	_ scheduling.Factory = Factory
)

// Picker returns candidate n mod len(eps) for its n-th pick. With a stable candidate set (the
// router keeps config order) that is plain round-robin; scores are ignored. Safe for concurrent use.
type Picker struct {
	n atomic.Uint64
}

// Factory builds the picker; it takes no parameters.
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return &Picker{}, nil
}

// Name returns Type.
func (*Picker) Name() string { return Type }

// Pick implements scheduling.Picker.
func (p *Picker) Pick(eps []*scheduling.Endpoint, _ []float64) *scheduling.Endpoint {
	return eps[(p.n.Add(1)-1)%uint64(len(eps))]
}
