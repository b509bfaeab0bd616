package config

import (
	"fmt"
	"time"
)

// Router configures the data plane.
type Router struct {
	// HealthInterval is the period of GET /health on each endpoint. Default 1s.
	HealthInterval Duration `json:"health_interval"`
	// ScrapeInterval is the period of GET /metrics on each endpoint. Default 50ms.
	ScrapeInterval Duration `json:"scrape_interval"`
	// ScrapeTimeout bounds one health check or scrape. Default 1s.
	ScrapeTimeout Duration `json:"scrape_timeout"`
	// StaleAfter: metrics older than this count the endpoint as saturated. Default 2s.
	StaleAfter Duration `json:"stale_after"`
	// Weights of the scorers; a weight of 0 disables a scorer.
	Weights ScorerWeights `json:"weights"`
	// PrefixBlockChars is the block size, in characters, of the approximate prefix scorer. Default 64
	// (about 16 tokens, one vLLM KV block). Blocks end at message boundaries, so a short first turn
	// still gives the second turn of a conversation a matching block.
	PrefixBlockChars int `json:"prefix_block_chars"`
	// PrefixLRUBlocks is the number of prefix blocks remembered per endpoint. Default 32768.
	PrefixLRUBlocks int `json:"prefix_lru_blocks"`
	// MaxAttempts is how many endpoints a request whose connection is refused may try. Default 3.
	MaxAttempts int `json:"max_attempts"`
}

// ScorerWeights weights the router's scorers; scores are in [0,1].
type ScorerWeights struct {
	Queue   *float64 `json:"queue"`    // default 1
	KVCache *float64 `json:"kv_cache"` // default 1
	Prefix  *float64 `json:"prefix"`   // default 3
}

func (r *Router) validate() error {
	for name, d := range map[string]Duration{"health_interval": r.HealthInterval, "scrape_interval": r.ScrapeInterval,
		"scrape_timeout": r.ScrapeTimeout, "stale_after": r.StaleAfter} {
		if d <= 0 {
			return fmt.Errorf("%s: must be positive, got %s", name, d.D())
		}
	}
	for name, w := range map[string]*float64{"queue": r.Weights.Queue, "kv_cache": r.Weights.KVCache, "prefix": r.Weights.Prefix} {
		if w != nil && *w < 0 {
			return fmt.Errorf("weights.%s: must not be negative, got %g", name, *w)
		}
	}
	switch {
	case r.PrefixBlockChars < 1:
		return fmt.Errorf("prefix_block_chars: must be positive, got %d", r.PrefixBlockChars)
	case r.PrefixLRUBlocks < 1:
		return fmt.Errorf("prefix_lru_blocks: must be positive, got %d", r.PrefixLRUBlocks)
	case r.MaxAttempts < 1:
		return fmt.Errorf("max_attempts: must be at least 1, got %d", r.MaxAttempts)
	}
	return nil
}

func defaultRouter() Router {
	return Router{
		HealthInterval: Duration(time.Second), ScrapeInterval: Duration(50 * time.Millisecond),
		ScrapeTimeout: Duration(time.Second), StaleAfter: Duration(2 * time.Second),
		Weights:          ScorerWeights{Queue: ptr(1.0), KVCache: ptr(1.0), Prefix: ptr(3.0)},
		PrefixBlockChars: 64, PrefixLRUBlocks: 32768, MaxAttempts: 3,
	}
}
