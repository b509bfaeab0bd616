package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"
)

// Bounds on what an engine may send to a probe; larger answers are errors.
const (
	maxHealthBytes  = 64 << 10
	maxModelsBytes  = 4 << 20
	maxMetricsBytes = 16 << 20
)

// Run checks every endpoint's health every HealthInterval (discovering its models from GET
// /v1/models until found) and scrapes its /metrics every ScrapeInterval, each endpoint in its own
// goroutines, until ctx is done. The first round of both starts at once. Run blocks and returns
// when every probe has stopped.
func (r *Router) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ep := range r.endpoints {
		wg.Go(func() { r.every(ctx, r.cfg.HealthInterval.D(), func() { r.checkHealth(ctx, ep) }) })
		wg.Go(func() { r.every(ctx, r.cfg.ScrapeInterval.D(), func() { r.scrape(ctx, ep) }) })
	}
	wg.Wait()
}

// every runs f now, then again d after the start of the previous run (at once if that run took
// longer), on the injected clock, until ctx is done. Runs never overlap.
func (r *Router) every(ctx context.Context, d time.Duration, f func()) {
	t := r.clk.NewTimer(d)
	defer t.Stop()
	f()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		t.Reset(d)
		f()
	}
}

// checkHealth runs one health check of ep: GET /health answering 2xx means healthy. A healthy
// endpoint whose models are unknown is asked for them. Transitions are logged.
func (r *Router) checkHealth(ctx context.Context, ep *endpoint) {
	_, err := r.fetch(ctx, ep, "/health", maxHealthBytes)
	if ctx.Err() != nil {
		return // shutting down: not the endpoint's fault
	}
	// Discovered model lists are refreshed every round: LoRA adapters come and go
	// (/v1/load_lora_adapter), and the scheduler reads them from Endpoint.Adapters.
	if err == nil && (!ep.configured || !ep.modelsKnown()) {
		r.discover(ctx, ep)
	}
	if ep.setHealthy(err == nil) {
		if err == nil {
			r.log.Info("endpoint healthy", "endpoint", ep.name)
		} else {
			r.log.Warn("endpoint unhealthy", "endpoint", ep.name, "err", err)
		}
	}
}

// discover reads ep's models from its GET /v1/models (OpenAI ModelList), keeping each model's
// object as the engine sent it. Failures leave the models unknown for the next round.
func (r *Router) discover(ctx context.Context, ep *endpoint) {
	b, err := r.fetch(ctx, ep, "/v1/models", maxModelsBytes)
	if err == nil {
		var ml modelList
		if ml, err = parseModelList(b); err == nil {
			known := ep.modelsKnown()
			ep.setModels(ml.ids, ml.objs, ml.adapters)
			if !known {
				r.log.Info("endpoint models discovered", "endpoint", ep.name, "models", ml.ids)
			}
			return
		}
	}
	if ctx.Err() == nil {
		r.log.Debug("endpoint model discovery failed", "endpoint", ep.name, "err", err)
	}
}

var errNoModels = errors.New("model list is empty")

// modelList is a parsed GET /v1/models answer.
type modelList struct {
	ids      []string
	objs     []json.RawMessage // compacted, one per id
	adapters []string          // ids of the entries with a parent: LoRA adapters
}

// parseModelList reads {"object":"list","data":[{"id":...},...]}; entries without an id are
// skipped, duplicates kept once. vLLM lists each loaded LoRA adapter as an entry whose parent is
// the base model (vllm/entrypoints/openai/serving_models.py, show_available_models); base models
// have "parent": null.
func parseModelList(b []byte) (modelList, error) {
	var list struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return modelList{}, err
	}
	var ml modelList
	seen := map[string]bool{}
	for _, raw := range list.Data {
		var m struct {
			ID     string  `json:"id"`
			Parent *string `json:"parent"`
		}
		if json.Unmarshal(raw, &m) != nil || m.ID == "" || seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		var compact bytes.Buffer
		if json.Compact(&compact, raw) != nil {
			continue
		}
		ml.ids = append(ml.ids, m.ID)
		ml.objs = append(ml.objs, compact.Bytes())
		if m.Parent != nil && *m.Parent != "" {
			ml.adapters = append(ml.adapters, m.ID)
		}
	}
	if len(ml.ids) == 0 {
		return modelList{}, errNoModels
	}
	return ml, nil
}

// scrape reads ep's /metrics once. A failure keeps the previous metrics, which turn stale after
// StaleAfter; only the first failure and the recovery are logged, not every 50 ms attempt.
func (r *Router) scrape(ctx context.Context, ep *endpoint) {
	b, err := r.fetch(ctx, ep, "/metrics", maxMetricsBytes)
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		m, perr := parseMetrics(bytes.NewReader(b))
		if perr == nil {
			if ep.setMetrics(m, r.clk.Now()) {
				r.log.Info("endpoint metrics scrape recovered", "endpoint", ep.name)
			}
			r.flow.dispatch() // the endpoint may no longer be saturated
			return
		}
		err = perr
	}
	if ep.scrapeFailed() {
		r.log.Warn("endpoint metrics scrape failed", "endpoint", ep.name, "err", err)
	}
}
