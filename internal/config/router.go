package config

import (
	"encoding/json"
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
	// Scheduler is the endpoint picker's plugin configuration, shaped like llm-d's
	// EndpointPickerConfig. Nil (the default) builds the default profile from Weights,
	// PrefixBlockChars and PrefixLRUBlocks. Plugin types and their parameters are checked when the
	// router starts (internal/router/plugins), not here, since only the router knows them.
	Scheduler *EndpointPickerConfig `json:"scheduler,omitempty"`
}

// EndpointPickerConfig configures the scheduler in the shape of llm-d's / the Gateway API
// Inference Extension's EndpointPickerConfig (apiVersion inference.networking.x-k8s.io/v1alpha1),
// with its camelCase keys, so an llm-d configuration's plugins section reads the same here:
//
//	scheduler:
//	  plugins:
//	    - type: queue-scorer
//	    - type: prefix-cache-scorer
//	      parameters: {blockSize: 64, lruCapacityPerServer: 32768}
//	  schedulingProfiles:
//	    - name: default
//	      plugins:
//	        - pluginRef: queue-scorer
//	          weight: 1
//	        - pluginRef: prefix-cache-scorer
//	          weight: 3
type EndpointPickerConfig struct {
	// APIVersion and Kind are accepted (and ignored) so an llm-d file can be pasted in.
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	// Plugins instantiates plugins by type; each instance is referenced by its name.
	Plugins []PluginSpec `json:"plugins"`
	// SchedulingProfiles lists the profiles; the router runs exactly one today.
	SchedulingProfiles []SchedulingProfile `json:"schedulingProfiles"`
}

// PluginSpec is one plugin instance.
type PluginSpec struct {
	// Type is the plugin's registered type name, e.g. "queue-scorer".
	Type string `json:"type"`
	// Name references the instance from a profile. Default: Type.
	Name string `json:"name,omitempty"`
	// Parameters are the type's own parameters, decoded strictly by its factory.
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

// SchedulingProfile is one filters -> scorers -> picker pipeline.
type SchedulingProfile struct {
	Name    string          `json:"name"`
	Plugins []ProfilePlugin `json:"plugins"`
}

// ProfilePlugin references a plugin instance from a profile. Weight applies to scorers only
// (default 1; 0 disables the scorer).
type ProfilePlugin struct {
	PluginRef string   `json:"pluginRef"`
	Weight    *float64 `json:"weight,omitempty"`
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
