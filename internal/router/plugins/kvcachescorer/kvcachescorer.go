// Package kvcachescorer registers the "kv-cache-utilization-scorer" plugin: 1 - KV-cache usage,
// stale endpoints 0 (scheduling.KVCacheScorer). See README.md.
package kvcachescorer

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = "kv-cache-utilization-scorer"

var _ scheduling.Factory = Factory

// Factory builds a KV-cache utilization scorer; it takes no parameters.
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return scheduling.KVCacheScorer{}, nil
}
