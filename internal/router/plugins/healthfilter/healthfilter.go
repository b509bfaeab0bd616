// Package healthfilter registers the "health-filter" plugin: it keeps the healthy endpoints
// (scheduling.HealthFilter). See README.md.
package healthfilter

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = scheduling.HealthFilterType

var _ scheduling.Factory = Factory

// Factory builds a health filter; it takes no parameters.
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return scheduling.HealthFilter{}, nil
}
