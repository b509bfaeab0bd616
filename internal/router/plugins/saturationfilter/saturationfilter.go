// Package saturationfilter registers the "saturation-filter" plugin: endpoints whose engine
// queue or KV cache is past a threshold, or whose metrics are stale, are left out while others
// have room. See README.md.
package saturationfilter

import (
	"encoding/json"
	"fmt"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = "saturation-filter"

// Defaults, GIE's saturation detector's (DefaultQueueDepthThreshold, DefaultKVCacheUtilThreshold).
const (
	DefaultQueueDepthThreshold  = 5
	DefaultKVCacheUtilThreshold = 0.8
)

// Parameters of the plugin; the threshold names are GIE's saturation detector's.
type Parameters struct {
	// QueueDepthThreshold: an endpoint with more waiting requests (vllm:num_requests_waiting) is
	// saturated. Default 5; >= 0.
	QueueDepthThreshold *int `json:"queueDepthThreshold"`
	// KVCacheUtilThreshold: an endpoint with a larger KV-cache usage fraction
	// (vllm:kv_cache_usage_perc) is saturated. Default 0.8; in [0, 1].
	KVCacheUtilThreshold *float64 `json:"kvCacheUtilThreshold"`
	// DropStale: an endpoint whose metrics are stale counts as saturated. Default true.
	DropStale *bool `json:"dropStale"`
}

var (
	_ scheduling.Filter  = (*Filter)(nil)
	_ scheduling.Factory = Factory
)

// Filter keeps the endpoints that are not saturated: waiting <= queueDepthThreshold, KV usage
// <= kvCacheUtilThreshold and (with dropStale) fresh metrics. When every candidate is saturated
// it keeps them all: the filter sheds load from hot endpoints, never the request (admission and
// flow control decide that). Stateless.
type Filter struct {
	queue     int
	kv        float64
	dropStale bool
}

// New returns a filter of the given thresholds.
func New(queueDepth int, kvUtil float64, dropStale bool) *Filter {
	return &Filter{queue: queueDepth, kv: kvUtil, dropStale: dropStale}
}

// Factory builds the filter. Errors name the parameter: "parameters.kvCacheUtilThreshold: must
// be in [0, 1], got 1.5".
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	var p Parameters
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	q, kv, stale := DefaultQueueDepthThreshold, DefaultKVCacheUtilThreshold, true
	if p.QueueDepthThreshold != nil {
		q = *p.QueueDepthThreshold
	}
	if p.KVCacheUtilThreshold != nil {
		kv = *p.KVCacheUtilThreshold
	}
	if p.DropStale != nil {
		stale = *p.DropStale
	}
	if q < 0 {
		return nil, fmt.Errorf("parameters.queueDepthThreshold: must be >= 0, got %d", q)
	}
	if !(kv >= 0 && kv <= 1) {
		return nil, fmt.Errorf("parameters.kvCacheUtilThreshold: must be in [0, 1], got %g", kv)
	}
	return New(q, kv, stale), nil
}

// Name returns Type.
func (*Filter) Name() string { return Type }

// Saturated reports whether e is past a threshold.
func (f *Filter) Saturated(e *scheduling.Endpoint) bool {
	if e.Stale {
		return f.dropStale
	}
	return e.Metrics.Waiting > f.queue || e.Metrics.KVCacheUsage > f.kv
}

// Filter implements scheduling.Filter. It never returns an error.
func (f *Filter) Filter(_ *scheduling.Request, eps []*scheduling.Endpoint) ([]*scheduling.Endpoint, error) {
	n := 0
	for _, e := range eps {
		if !f.Saturated(e) {
			n++
		}
	}
	if n == 0 || n == len(eps) {
		return eps, nil
	}
	kept := make([]*scheduling.Endpoint, 0, n)
	for _, e := range eps {
		if !f.Saturated(e) {
			kept = append(kept, e)
		}
	}
	return kept, nil
}
