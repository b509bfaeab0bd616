// Package queuescorer registers the "queue-scorer" plugin: waiting requests plus the router's
// in-flight requests, min-max normalised, stale endpoints 0 (scheduling.QueueScorer). See README.md.
package queuescorer

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = "queue-scorer"

var _ scheduling.Factory = Factory

// Factory builds a queue scorer; it takes no parameters.
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return scheduling.QueueScorer{}, nil
}
