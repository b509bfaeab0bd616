// Package maxscorepicker registers the "max-score-picker" plugin: the highest weighted score
// wins, ties broken uniformly at random (scheduling.MaxScorePicker). See README.md.
package maxscorepicker

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = scheduling.MaxScorePickerType

var _ scheduling.Factory = Factory

// Factory builds a max-score picker drawing its tie-breaks from h.Rand(); no parameters.
func Factory(_ string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return scheduling.NewMaxScorePicker(h.Rand()), nil
}
