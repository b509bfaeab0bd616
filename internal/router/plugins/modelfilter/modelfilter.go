// Package modelfilter registers the "model-filter" plugin: it keeps the endpoints that serve the
// requested model (scheduling.ModelFilter). See README.md.
package modelfilter

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = scheduling.ModelFilterType

var _ scheduling.Factory = Factory

// Factory builds a model filter; it takes no parameters.
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return scheduling.ModelFilter{}, nil
}
