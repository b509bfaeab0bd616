// Package prefixscorer registers the "prefix-cache-scorer" plugin in approximate mode: the router
// remembers which prompt blocks it sent to each endpoint and prefers the endpoint holding the
// longest prefix (scheduling.PrefixScorer). See README.md.
package prefixscorer

import (
	"encoding/json"
	"fmt"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig (llm-d's name).
const Type = "prefix-cache-scorer"

// Defaults of the parameters (config.Router's prefix_block_chars and prefix_lru_blocks).
const (
	DefaultBlockSize            = 64
	DefaultLRUCapacityPerServer = 32768
)

// Parameters of the plugin; names follow llm-d's approximate prefix-cache scorer.
type Parameters struct {
	// BlockSize is the block size in characters (bytes of the rendered prompt). Default 64.
	BlockSize int `json:"blockSize"`
	// LRUCapacityPerServer is the number of block hashes remembered per endpoint. Default 32768.
	LRUCapacityPerServer int `json:"lruCapacityPerServer"`
}

var _ scheduling.Factory = Factory

// Factory builds an approximate prefix-cache scorer. Errors name the parameter:
// "parameters.blockSize: must be positive, got 0".
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	p := Parameters{BlockSize: DefaultBlockSize, LRUCapacityPerServer: DefaultLRUCapacityPerServer}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	if p.BlockSize < 1 {
		return nil, fmt.Errorf("parameters.blockSize: must be positive, got %d", p.BlockSize)
	}
	if p.LRUCapacityPerServer < 1 {
		return nil, fmt.Errorf("parameters.lruCapacityPerServer: must be positive, got %d", p.LRUCapacityPerServer)
	}
	return scheduling.NewPrefixScorer(p.BlockSize, p.LRUCapacityPerServer)
}
