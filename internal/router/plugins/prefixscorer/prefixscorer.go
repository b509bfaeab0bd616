// Package prefixscorer registers the "prefix-cache-scorer" plugin in approximate mode: the router
// remembers which prompt blocks it sent to each endpoint and prefers the endpoint holding the
// longest prefix (scheduling.PrefixScorer). See README.md.
package prefixscorer

import (
	"encoding/json"
	"fmt"

	"github.com/strata-inference/strata/internal/router/scheduling"
	"github.com/strata-inference/strata/internal/tokenizer"
)

var _ scheduling.Tokenizer = (*tokenizer.Tokenizer)(nil)

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
	// Tokenizer names an internal/tokenizer vocabulary ("llama-3", "qwen2"). When set, prompts
	// are tokenized as the engine does and cut into blocks of BlockSizeTokens tokens; when empty
	// (the default), into blocks of BlockSize characters.
	Tokenizer string `json:"tokenizer,omitempty"`
	// BlockSizeTokens is the block size in tokens with a tokenizer (GIE's name); the engines'
	// --block-size. Default 16.
	BlockSizeTokens int `json:"blockSizeTokens,omitempty"`
}

// DefaultBlockSizeTokens is vLLM's default --block-size.
const DefaultBlockSizeTokens = 16

var _ scheduling.Factory = Factory

// Factory builds an approximate prefix-cache scorer. Errors name the parameter:
// "parameters.blockSize: must be positive, got 0", "parameters.tokenizer: tokenizer: unknown
// tokenizer \"x\" ...".
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	p := Parameters{BlockSize: DefaultBlockSize, LRUCapacityPerServer: DefaultLRUCapacityPerServer, BlockSizeTokens: DefaultBlockSizeTokens}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	if p.BlockSize < 1 {
		return nil, fmt.Errorf("parameters.blockSize: must be positive, got %d", p.BlockSize)
	}
	if p.LRUCapacityPerServer < 1 {
		return nil, fmt.Errorf("parameters.lruCapacityPerServer: must be positive, got %d", p.LRUCapacityPerServer)
	}
	if p.BlockSizeTokens < 1 {
		return nil, fmt.Errorf("parameters.blockSizeTokens: must be positive, got %d", p.BlockSizeTokens)
	}
	if p.Tokenizer == "" {
		return scheduling.NewPrefixScorer(p.BlockSize, p.LRUCapacityPerServer)
	}
	tok, err := tokenizer.Load(p.Tokenizer)
	if err != nil {
		return nil, fmt.Errorf("parameters.tokenizer: %w", err)
	}
	return scheduling.NewPrefixScorerTokens(tok, p.BlockSizeTokens, p.BlockSize, p.LRUCapacityPerServer)
}
