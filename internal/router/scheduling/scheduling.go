// Package scheduling is the router's endpoint picker: filters, then scorers, then a picker, in the
// shape of the Gateway API Inference Extension (GIE) / llm-d scheduler.
//
// A scheduling cycle takes a Request and a snapshot of every Endpoint (taken by the router at
// decision time), runs each Filter in order, scores the remaining candidates with every Scorer
// (each score in [0,1]), sums the scores weighted by WeightedScorer.Weight, and lets the Picker
// choose. Plugins that implement PreRequest then learn the decision (the prefix scorer records the
// request's blocks on the chosen endpoint).
//
// The interfaces are owned here, by the scheduler that consumes them; plugins are concrete types
// carrying `var _ Scorer = (*T)(nil)`. Optional capabilities (PreRequest, KVEventHandler) are
// separate one-method interfaces found by type assertion; engine KV events reach the plugins
// through Scheduler.HandleKVEvents.
package scheduling

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/strata-inference/strata/internal/openai"
)

// Sentinel errors of a scheduling cycle. ErrModelNotServed and ErrNoHealthyEndpoint wrap
// ErrNoEndpoint, so errors.Is(err, ErrNoEndpoint) holds for every "nothing to pick" outcome.
var (
	// ErrNoEndpoint: the filters left no candidate.
	ErrNoEndpoint = errors.New("no endpoint can serve the request")
	// ErrModelNotServed: every endpoint knows its models and none serves the requested one. The
	// router answers it with OpenAI's 404 model_not_found.
	ErrModelNotServed = fmt.Errorf("%w: no endpoint serves the model", ErrNoEndpoint)
	// ErrNoHealthyEndpoint: endpoints serve the model but none of them is healthy (or all were
	// already tried). The router answers it with 503.
	ErrNoHealthyEndpoint = fmt.Errorf("%w: no healthy endpoint serves the model", ErrNoEndpoint)
)

// Metrics is the engine telemetry of one endpoint, as last scraped from its Prometheus /metrics
// (vLLM names: vllm/v1/metrics/loggers.py). Zero values mean "not reported".
type Metrics struct {
	// Running is vllm:num_requests_running: requests in the engine's running batch.
	Running int
	// Waiting is vllm:num_requests_waiting: requests queued in the engine.
	Waiting int
	// KVCacheUsage is vllm:kv_cache_usage_perc (or the older vllm:gpu_cache_usage_perc): the
	// fraction of KV blocks in use, in [0,1] (vLLM names it "perc" but reports a fraction).
	KVCacheUsage float64
	// BlockSize is the KV block size in tokens, from the block_size label of vllm:cache_config_info.
	BlockSize int
	// NumGPUBlocks is the KV cache capacity in blocks, from the num_gpu_blocks label of
	// vllm:cache_config_info.
	NumGPUBlocks int
	// RunningLoRAs and WaitingLoRAs are the LoRA adapters with requests running / waiting on the
	// engine, from the running_lora_adapters and waiting_lora_adapters labels (comma-separated) of
	// the newest vllm:lora_requests_info sample (vllm/v1/metrics/loggers.py). MaxLoRA is its
	// max_lora label: how many adapters the engine can hold in a batch at once (0 = not reported).
	RunningLoRAs []string
	WaitingLoRAs []string
	MaxLoRA      int
}

// Endpoint is what the scheduler knows of one endpoint (one engine replica) at decision time. It
// is a snapshot: plugins read it and never change it.
type Endpoint struct {
	// Name identifies the endpoint (config engines[].name); plugins key their state by it.
	Name string
	// Models the endpoint serves. ModelsKnown is false while they are still to be discovered from
	// its GET /v1/models.
	Models      []string
	ModelsKnown bool
	// Healthy is the result of the last health check (or false after a refused connection).
	Healthy bool
	// Metrics is the last successful scrape. Stale is true when it is older than the router's
	// stale_after or when there has been none: load scorers then treat the endpoint as saturated.
	Metrics Metrics
	Stale   bool
	// InFlight and InFlightTokens are the router's own accounting: requests (and their estimated
	// prompt tokens) sent to this endpoint and not finished. Unlike Metrics they are exact at
	// decision time.
	InFlight       int
	InFlightTokens int
	// Role is the endpoint's part in disaggregated serving: RolePrefill, RoleDecode or RoleBoth
	// ("" means both), from config engines[].role.
	Role string
	// Adapters are the LoRA adapters the endpoint lists in its GET /v1/models (the entries with
	// a parent, as vLLM lists loaded adapters).
	Adapters []string
}

// Endpoint roles of Endpoint.Role, as llm-d names them for prefill/decode disaggregation.
const (
	RolePrefill = "prefill"
	RoleDecode  = "decode"
	RoleBoth    = "both"
)

// Serves reports whether the endpoint lists model.
func (e *Endpoint) Serves(model string) bool { return slices.Contains(e.Models, model) }

// Request is the part of an inference request the scheduler reads.
type Request struct {
	// Model is the requested model name.
	Model string
	// PromptParts is the prompt text split at message boundaries: one "role: content\n" line per
	// chat message, or the whole completion prompt. Concatenated, the parts equal
	// openai.InferenceRequest.PromptText(). Prefix blocks never cross a part boundary, so a
	// conversation's earlier messages hash the same in every later turn.
	PromptParts []string
	// PromptTokens is an estimate of the prompt length in tokens.
	PromptTokens int
	// Session is the conversation / agent-loop id of the X-Strata-Session header
	// (openai.HeaderSession), "" when absent: a KV-affinity hint for the session-affinity scorer.
	Session string
	// Exclude names endpoints already tried for this request (their connection was refused); they
	// are removed after the filters.
	Exclude []string
	// Messages are the chat request's messages (nil for completions); plugins that tokenize
	// (the precise prefix-cache scorer) apply the chat template to them.
	Messages []openai.Message
	// Prompt is the completion request's prompt text ("" for chat).
	Prompt string
	// TokenIDs are the exact prompt token ids when the caller knows them (`strata replay`, a
	// tokenized prompt), nil otherwise. Plugins prefer them over tokenizing Messages or Prompt.
	TokenIDs []int
	// LoRA is the adapter name when the requested model names a LoRA adapter, else "".
	LoRA string
	// Objective is the x-gateway-inference-objective header (GIE's InferenceObjective name) and
	// FairnessID the x-gateway-inference-fairness-id header, "" when absent.
	Objective  string
	FairnessID string

	state map[string]any
}

// Read returns what a plugin stored under key during this scheduling cycle (GIE's CycleState).
func (r *Request) Read(key string) (any, bool) {
	v, ok := r.state[key]
	return v, ok
}

// Write stores v under key for later plugins or later phases (PreRequest) of the same request.
// Keys should be the plugin's type name. A Request belongs to one goroutine.
func (r *Request) Write(key string, v any) {
	if r.state == nil {
		r.state = make(map[string]any, 2)
	}
	r.state[key] = v
}

// Filter removes the endpoints that must not serve a request.
type Filter interface {
	// Name is the plugin's type name, for logs and errors.
	Name() string
	// Filter returns the endpoints of eps that may serve req. It may reorder and reuse eps's
	// backing array. When it keeps none it returns an error saying why (wrapping ErrNoEndpoint).
	Filter(req *Request, eps []*Endpoint) ([]*Endpoint, error)
}

// Scorer rates every candidate for a request.
type Scorer interface {
	// Name is the plugin's type name.
	Name() string
	// Score writes the score of eps[i] to scores[i], each in [0,1], higher is better. len(scores)
	// equals len(eps) and scores is zeroed on entry.
	Score(req *Request, eps []*Endpoint, scores []float64)
}

// Picker chooses one endpoint from the scored candidates.
type Picker interface {
	// Name is the plugin's type name.
	Name() string
	// Pick returns one of eps (non-empty); scores[i] is the weighted score of eps[i].
	Pick(eps []*Endpoint, scores []float64) *Endpoint
}

// PreRequest is the optional capability of a plugin that learns the scheduling decision before
// the request is sent (GIE's PreRequest extension point), such as the prefix scorer recording
// the request's blocks on the chosen endpoint.
type PreRequest interface {
	PreRequest(req *Request, picked *Endpoint)
}

// WeightedScorer is a Scorer with its weight in the sum. A weight of 0 disables the scorer.
type WeightedScorer struct {
	Scorer
	Weight float64
}

// Scheduler runs one profile: filters in order, weighted scorers, one picker. It is safe for
// concurrent use when its plugins are.
type Scheduler struct {
	filters []Filter
	scorers []WeightedScorer
	picker  Picker
	pre     []PreRequest
	kv      []KVEventHandler
}

// NewScheduler returns a scheduler of the given plugins. Scorers of weight <= 0 are left out. Each
// plugin that implements PreRequest is called, in the order given, after every pick.
func NewScheduler(filters []Filter, scorers []WeightedScorer, picker Picker) *Scheduler {
	s := &Scheduler{filters: filters, picker: picker}
	for _, ws := range scorers {
		if ws.Weight > 0 {
			s.scorers = append(s.scorers, ws)
		}
	}
	var plugins []any
	for _, f := range filters {
		plugins = append(plugins, f)
	}
	for _, ws := range s.scorers {
		plugins = append(plugins, ws.Scorer)
	}
	plugins = append(plugins, picker)
	for _, p := range plugins {
		if pr, ok := p.(PreRequest); ok {
			s.pre = append(s.pre, pr)
		}
	}
	// KV handlers include scorers of weight 0: their index stays current, so a weight raised at
	// the next reload finds it warm.
	addKV := func(p any) {
		if h, ok := p.(KVEventHandler); ok {
			s.kv = append(s.kv, h)
		}
	}
	for _, f := range filters {
		addKV(f)
	}
	for _, ws := range scorers {
		addKV(ws.Scorer)
	}
	addKV(picker)
	return s
}

// Schedule picks the endpoint for req among eps (the caller's slice is not changed). Errors wrap
// ErrNoEndpoint: ErrModelNotServed, ErrNoHealthyEndpoint, or whatever a filter returned.
func (s *Scheduler) Schedule(req *Request, eps []*Endpoint) (*Endpoint, error) {
	cands := slices.Clone(eps)
	for _, f := range s.filters {
		var err error
		if cands, err = f.Filter(req, cands); err != nil {
			return nil, err
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("filter %s: %w", f.Name(), ErrNoEndpoint)
		}
	}
	if len(req.Exclude) > 0 {
		cands = slices.DeleteFunc(cands, func(e *Endpoint) bool { return slices.Contains(req.Exclude, e.Name) })
		if len(cands) == 0 {
			return nil, ErrNoHealthyEndpoint
		}
	}
	buf := make([]float64, 2*len(cands))
	total, one := buf[:len(cands)], buf[len(cands):]
	for _, ws := range s.scorers {
		clear(one)
		ws.Score(req, cands, one)
		for i, v := range one {
			total[i] += ws.Weight * clamp01(v)
		}
	}
	picked := s.picker.Pick(cands, total)
	for _, p := range s.pre {
		p.PreRequest(req, picked)
	}
	return picked, nil
}

// String describes the profile, e.g. "filters=[model-filter health-filter]
// scorers=[queue-scorer:1 prefix-cache-scorer:3] picker=max-score-picker" (scorers of weight 0
// are left out), for logs and tests.
func (s *Scheduler) String() string {
	var b strings.Builder
	b.WriteString("filters=[")
	for i, f := range s.filters {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.Name())
	}
	b.WriteString("] scorers=[")
	for i, ws := range s.scorers {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%g", ws.Name(), ws.Weight)
	}
	fmt.Fprintf(&b, "] picker=%s", s.picker.Name())
	return b.String()
}

// MinMaxLowerIsBetter writes to scores[i] the min-max normalised score of a load value where
// lower is better, as GIE's queue scorer: (max - v) / (max - min), or 1 for all when every value
// is equal. Endpoints with ok false (stale metrics) score 0 and take no part in min and max.
func MinMaxLowerIsBetter(vals []float64, ok []bool, scores []float64) {
	lo, hi, seen := 0.0, 0.0, false
	for i, v := range vals {
		if !ok[i] {
			continue
		}
		if !seen {
			lo, hi, seen = v, v, true
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	for i, v := range vals {
		switch {
		case !ok[i]:
			scores[i] = 0
		case hi == lo:
			scores[i] = 1
		default:
			scores[i] = (hi - v) / (hi - lo)
		}
	}
}

// clamp01 keeps a misbehaving scorer from dominating the sum: scores outside [0,1] are clipped
// and NaN counts as 0.
func clamp01(v float64) float64 {
	switch {
	case math.IsNaN(v) || v < 0:
		return 0
	case v > 1:
		return 1
	}
	return v
}
