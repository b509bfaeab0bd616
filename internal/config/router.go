package config

import (
	"encoding/json"
	"errors"
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
	// MaxAttempts is how many endpoints a request may try when the chosen one fails before the
	// first response byte (connection refused or reset, or a 502/503 answer from the engine).
	// Default 3: the first choice and 2 retries.
	MaxAttempts int `json:"max_attempts"`
	// FlowControl queues, prioritises and sheds requests when every endpoint is saturated, after
	// the Gateway API Inference Extension's flow control and InferenceObjective priorities.
	FlowControl FlowControl `json:"flow_control"`
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

// FlowControl configures the router's admission: priorities from the
// x-gateway-inference-objective header, a saturation detector, and a bounded queue that is
// fair across x-gateway-inference-fairness-id values within a priority band. The semantics follow
// the Gateway API Inference Extension (GIE): InferenceObjective priorities (negative =
// sheddable), the utilization saturation detector (pkg/epp/.../saturationdetector) and the flow
// controller's outcomes (queue at capacity: 429; TTL expired in the queue: 503).
type FlowControl struct {
	// Enabled queues requests in the router while every candidate endpoint is saturated. When
	// false (the default, GIE without its flow-control feature gate) requests are never queued;
	// sheddable ones are still refused with 429 while every candidate is saturated.
	Enabled bool `json:"enabled"`
	// Objectives maps an inference objective name (the x-gateway-inference-objective header,
	// GIE's InferenceObjective) to its priority: higher is served first; negative priorities are
	// sheddable.
	Objectives map[string]int `json:"objectives"`
	// DefaultPriority is the priority of a request without an objective header or naming an
	// objective not in Objectives. Default 0, as GIE's default for requests without an
	// InferenceObjective.
	DefaultPriority int `json:"default_priority"`
	// QueueCapacity bounds the requests waiting in the router, all bands together; a request
	// arriving at a full queue gets 429. Default 1000.
	QueueCapacity int `json:"queue_capacity"`
	// TTL is how long a request may wait in the queue before it is answered 503. Default 30s.
	TTL Duration `json:"ttl"`
	// Saturation sets when an endpoint counts as saturated.
	Saturation Saturation `json:"saturation"`
}

// Saturation holds the saturation detector's thresholds, after GIE's utilization detector: an
// endpoint is saturated when its waiting queue (vllm:num_requests_waiting, plus requests the
// router sent since the last scrape that the scrape does not show yet) is at least
// QueueDepthThreshold, or its KV-cache usage is at least KVCacheUtilThreshold, or its metrics are
// stale (router.stale_after), or it has MaxConcurrency requests in flight from this router.
type Saturation struct {
	// QueueDepthThreshold in requests. Default 5 (GIE DefaultQueueDepthThreshold).
	QueueDepthThreshold int `json:"queue_depth_threshold"`
	// KVCacheUtilThreshold in (0, 1]. Default 0.8 (GIE DefaultKVCacheUtilThreshold).
	KVCacheUtilThreshold float64 `json:"kv_cache_util_threshold"`
	// MaxConcurrency caps the requests in flight from this router per endpoint (GIE's
	// concurrency detector); 0 (the default) means no cap.
	MaxConcurrency int `json:"max_concurrency"`
}

func (f *FlowControl) validate() error {
	switch {
	case f.QueueCapacity < 1:
		return fmt.Errorf("queue_capacity: must be at least 1, got %d", f.QueueCapacity)
	case f.TTL <= 0:
		return fmt.Errorf("ttl: must be positive, got %s", f.TTL.D())
	case f.Saturation.QueueDepthThreshold < 1:
		return fmt.Errorf("saturation.queue_depth_threshold: must be at least 1, got %d", f.Saturation.QueueDepthThreshold)
	case !(f.Saturation.KVCacheUtilThreshold > 0 && f.Saturation.KVCacheUtilThreshold <= 1):
		return fmt.Errorf("saturation.kv_cache_util_threshold: must be in (0, 1], got %g", f.Saturation.KVCacheUtilThreshold)
	case f.Saturation.MaxConcurrency < 0:
		return fmt.Errorf("saturation.max_concurrency: must not be negative, got %d", f.Saturation.MaxConcurrency)
	}
	for name := range f.Objectives {
		if name == "" {
			return errors.New("objectives: an objective name must not be empty")
		}
	}
	return nil
}

// Engine roles of Engine.Role, as llm-d names them for prefill/decode disaggregation.
const (
	EngineRolePrefill = "prefill"
	EngineRoleDecode  = "decode"
	EngineRoleBoth    = "both"
)

// validate checks the fields of one engine that Config.Validate does not (url and name).
func (e *Engine) validate() error {
	switch e.Role {
	case "", EngineRolePrefill, EngineRoleDecode, EngineRoleBoth:
	default:
		return fmt.Errorf("role: unknown role %q (want prefill, decode or both)", e.Role)
	}
	if e.KVEvents != "" && !validZMQEndpoint(e.KVEvents) {
		return fmt.Errorf("kv_events: %q is not a tcp://, ipc:// or inproc:// address", e.KVEvents)
	}
	return nil
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
	if err := r.FlowControl.validate(); err != nil {
		return fmt.Errorf("flow_control.%w", err)
	}
	return nil
}

func defaultRouter() Router {
	return Router{
		HealthInterval: Duration(time.Second), ScrapeInterval: Duration(50 * time.Millisecond),
		ScrapeTimeout: Duration(time.Second), StaleAfter: Duration(2 * time.Second),
		Weights:          ScorerWeights{Queue: ptr(1.0), KVCache: ptr(1.0), Prefix: ptr(3.0)},
		PrefixBlockChars: 64, PrefixLRUBlocks: 32768, MaxAttempts: 3,
		FlowControl: FlowControl{QueueCapacity: 1000, TTL: Duration(30 * time.Second),
			Saturation: Saturation{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.8}},
	}
}
