// Package loraaffinity registers the "lora-affinity-scorer" and "lora-affinity-filter" plugins
// (GIE's names): requests for a LoRA adapter go where the adapter is already loaded, or where
// the engine has a free adapter slot, so vLLM need not swap adapters. See README.md.
package loraaffinity

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type names in an EndpointPickerConfig.
const (
	ScorerType = "lora-affinity-scorer"
	FilterType = "lora-affinity-filter"
)

// Scores of the scorer, by what the endpoint's vllm:lora_requests_info says of the adapter.
const (
	ScoreRunning  = 1.0 // requests of the adapter are running: its weights are in the batch
	ScoreWaiting  = 0.8 // requests of the adapter are waiting: it is being loaded
	ScoreFreeSlot = 0.6 // fewer adapters active than --max-loras: it can load without eviction
)

// DefaultThreshold is the filter's probability of keeping only the endpoints with the adapter
// active when some also have a free slot (GIE's default lora affinity threshold).
const DefaultThreshold = 0.999

var (
	_ scheduling.Scorer  = (*Scorer)(nil)
	_ scheduling.Filter  = (*Filter)(nil)
	_ scheduling.Factory = ScorerFactory
	_ scheduling.Factory = FilterFactory
)

// affinity classifies e for adapter: 3 running, 2 waiting, 1 free slot, 0 none. An engine that
// does not report --max-loras (MaxLoRA 0) counts as having a free slot, as does one with no
// adapter active.
func affinity(e *scheduling.Endpoint, adapter string) int {
	m := &e.Metrics
	switch {
	case slices.Contains(m.RunningLoRAs, adapter):
		return 3
	case slices.Contains(m.WaitingLoRAs, adapter):
		return 2
	}
	active := len(m.RunningLoRAs)
	for _, w := range m.WaitingLoRAs {
		if !slices.Contains(m.RunningLoRAs, w) {
			active++
		}
	}
	if m.MaxLoRA == 0 || active < m.MaxLoRA {
		return 1
	}
	return 0
}

// Scorer scores endpoints for the request's adapter (scheduling.Request.LoRA): ScoreRunning when
// the adapter has running requests there, ScoreWaiting when it has waiting ones, ScoreFreeSlot
// when the engine has fewer active adapters than its max_lora, else 0. Requests for the base
// model score 0 everywhere (no preference). Stale metrics score 0. Stateless; safe for
// concurrent use.
type Scorer struct{}

// ScorerFactory builds the scorer; it takes no parameters.
func ScorerFactory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return Scorer{}, nil
}

// Name returns ScorerType.
func (Scorer) Name() string { return ScorerType }

// Score implements scheduling.Scorer.
func (Scorer) Score(req *scheduling.Request, eps []*scheduling.Endpoint, scores []float64) {
	if req.LoRA == "" {
		return
	}
	for i, e := range eps {
		if e.Stale {
			continue
		}
		scores[i] = [...]float64{0, ScoreFreeSlot, ScoreWaiting, ScoreRunning}[affinity(e, req.LoRA)]
	}
}

// FilterParameters of the filter.
type FilterParameters struct {
	// Threshold is the probability in [0,1] of keeping only the endpoints where the adapter is
	// active (running or waiting) when others have a free slot; otherwise those with a free slot
	// are kept, which spreads a hot adapter over more replicas. Default 0.999.
	Threshold *float64 `json:"threshold"`
}

// Filter keeps, for a request naming an adapter, the endpoints where the adapter is active, or,
// with probability 1 - threshold or when there are none, those with a free adapter slot, as
// GIE's LoRA affinity filter. Unlike GIE's it never empties the candidate list: when no endpoint
// has the adapter or a free slot, every candidate is kept (the engine queues the request until
// a slot frees). Endpoints with stale metrics count as having neither. It is safe for concurrent
// use.
type Filter struct {
	threshold float64
	mu        sync.Mutex
	rng       *rand.Rand
}

// FilterFactory builds the filter. Errors: "parameters.threshold: must be in [0, 1], got 2".
func FilterFactory(_ string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
	p := FilterParameters{}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	t := DefaultThreshold
	if p.Threshold != nil {
		t = *p.Threshold
	}
	if !(t >= 0 && t <= 1) {
		return nil, fmt.Errorf("parameters.threshold: must be in [0, 1], got %g", t)
	}
	return &Filter{threshold: t, rng: rand.New(h.Rand())}, nil
}

// Name returns FilterType.
func (*Filter) Name() string { return FilterType }

// Filter implements scheduling.Filter.
func (f *Filter) Filter(req *scheduling.Request, eps []*scheduling.Endpoint) ([]*scheduling.Endpoint, error) {
	if req.LoRA == "" {
		return eps, nil
	}
	var active, free []*scheduling.Endpoint
	for _, e := range eps {
		if e.Stale {
			continue
		}
		switch a := affinity(e, req.LoRA); {
		case a >= 2:
			active = append(active, e)
		case a == 1:
			free = append(free, e)
		}
	}
	switch {
	case len(active) > 0 && len(free) > 0:
		f.mu.Lock()
		keepActive := f.rng.Float64() < f.threshold
		f.mu.Unlock()
		if keepActive {
			return active, nil
		}
		return free, nil
	case len(active) > 0:
		return active, nil
	case len(free) > 0:
		return free, nil
	}
	return eps, nil
}
