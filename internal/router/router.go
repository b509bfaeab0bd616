// Package router is Strata's data plane: it answers "where should this request run?". It keeps
// soft state about each engine replica (health, served models and LoRA adapters, scraped vLLM
// metrics, its own in-flight accounting), admits requests through flow control (priorities,
// fairness, queueing and shedding while every replica is saturated), picks a replica per request
// with the scheduler in internal/router/scheduling (filters -> weighted scorers -> picker; a
// decode and a prefill profile for prefill/decode disaggregation), and proxies the request there,
// retrying failures before the first response byte and relaying the answer (streams chunk by
// chunk).
//
// The Router is an http.Handler speaking the OpenAI API; it reaches the engines through an
// http.RoundTripper at each engine's base URL. See README.md for the scheduler and its plugins.
package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Router routes OpenAI inference requests to engine replicas. Create it with New, start its
// health checks and scrapes with Run, and serve it as an http.Handler.
type Router struct {
	cfg       config.Router
	transport http.RoundTripper
	clk       clock.Clock
	log       *slog.Logger
	metrics   *routerMetrics

	endpoints []*endpoint // config order; fixed after New
	profiles  *profileSet
	flow      *flowQueue

	// pickMu serialises decisions so each one sees the in-flight counts and prefix blocks of the
	// previous one: a burst of requests sharing a prefix then lands on one replica and a burst of
	// cold requests spreads, instead of all racing to the same "idle" replica.
	pickMu sync.Mutex
}

// New returns a router over engines (at least one; names unique; base URLs without /v1; role
// "", prefill, decode or both). Engines without Models have them (and their LoRA adapters)
// discovered from their GET /v1/models at every health round. Zero durations, sizes and
// flow-control thresholds in cfg take their config.Default() values; nil weights too, and a
// weight of 0 disables its scorer. cfg.Scheduler, when set, replaces the default profile (built
// from the weights and prefix sizes, see plugins.DefaultProfile); it may declare llm-d's
// pd-profile-handler with a decode and a prefill profile (see disagg.go). An invalid one is an
// error naming the plugin and field. transport reaches the engines (nil: http.DefaultTransport);
// clk drives health checks, scrapes and staleness (nil: the real clock); metrics are registered
// on reg (nil: not registered); log may be nil.
//
// Every endpoint starts unhealthy: Ready is false and requests get 503 until Run's first health
// round passes.
func New(cfg config.Router, engines []config.Engine, transport http.RoundTripper, clk clock.Clock,
	reg prometheus.Registerer, log *slog.Logger) (*Router, error) {
	return newRouter(cfg, engines, transport, clk, reg, log, nil)
}

// newRouter is New with the picker's random source (nil: random seed), for deterministic tests.
func newRouter(cfg config.Router, engines []config.Engine, transport http.RoundTripper, clk clock.Clock,
	reg prometheus.Registerer, log *slog.Logger, src rand.Source) (*Router, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	if len(engines) == 0 {
		return nil, errors.New("no engines")
	}
	if transport == nil {
		transport = http.DefaultTransport
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{cfg: cfg, transport: transport, clk: clk, log: log}
	created := clk.Now().Unix()
	names := map[string]bool{}
	for _, e := range engines {
		ep, err := newEndpoint(e, created)
		if err != nil {
			return nil, err
		}
		if names[ep.name] {
			return nil, fmt.Errorf("engine name %q used twice", ep.name)
		}
		names[ep.name] = true
		r.endpoints = append(r.endpoints, ep)
	}
	if r.profiles, err = buildProfiles(cfg, src, scheduling.WithLogger(log)); err != nil {
		return nil, fmt.Errorf("router.scheduler: %w", err)
	}
	log.Debug("scheduler profile", "profile", r.profiles.main.name, "plugins", r.profiles.main.sched.String())
	if pf := r.profiles.prefill; pf != nil {
		log.Debug("scheduler profile", "profile", pf.name, "plugins", pf.sched.String(), "pd_threshold", r.profiles.threshold)
	}
	r.flow = newFlowQueue(r, cfg.FlowControl)
	if r.metrics, err = newRouterMetrics(reg, r); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return r, nil
}

// withDefaults fills zero fields of cfg from config.Default() and rejects negative ones.
func withDefaults(cfg config.Router) (config.Router, error) {
	def := config.Default().Router
	for _, f := range []struct {
		name   string
		v      *config.Duration
		defVal config.Duration
	}{
		{"health_interval", &cfg.HealthInterval, def.HealthInterval},
		{"scrape_interval", &cfg.ScrapeInterval, def.ScrapeInterval},
		{"scrape_timeout", &cfg.ScrapeTimeout, def.ScrapeTimeout},
		{"stale_after", &cfg.StaleAfter, def.StaleAfter},
	} {
		if *f.v < 0 {
			return cfg, fmt.Errorf("%s: must be positive, got %s", f.name, f.v.D())
		}
		if *f.v == 0 {
			*f.v = f.defVal
		}
	}
	for _, f := range []struct {
		name   string
		v      *int
		defVal int
	}{
		{"prefix_block_chars", &cfg.PrefixBlockChars, def.PrefixBlockChars},
		{"prefix_lru_blocks", &cfg.PrefixLRUBlocks, def.PrefixLRUBlocks},
		{"max_attempts", &cfg.MaxAttempts, def.MaxAttempts},
	} {
		if *f.v < 0 {
			return cfg, fmt.Errorf("%s: must be positive, got %d", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.defVal
		}
	}
	for name, w := range map[string]*float64{"queue": cfg.Weights.Queue, "kv_cache": cfg.Weights.KVCache, "prefix": cfg.Weights.Prefix} {
		if w != nil && !(*w >= 0) {
			return cfg, fmt.Errorf("weights.%s: must not be negative, got %g", name, *w)
		}
	}
	fc, dfc := &cfg.FlowControl, def.FlowControl
	if fc.QueueCapacity == 0 {
		fc.QueueCapacity = dfc.QueueCapacity
	}
	if fc.TTL == 0 {
		fc.TTL = dfc.TTL
	}
	if fc.Saturation.QueueDepthThreshold == 0 {
		fc.Saturation.QueueDepthThreshold = dfc.Saturation.QueueDepthThreshold
	}
	if fc.Saturation.KVCacheUtilThreshold == 0 {
		fc.Saturation.KVCacheUtilThreshold = dfc.Saturation.KVCacheUtilThreshold
	}
	if err := validateFlowControl(fc); err != nil {
		return cfg, fmt.Errorf("flow_control.%w", err)
	}
	return cfg, nil
}

// Ready reports whether at least one endpoint is healthy and knows its models, so a request can
// be served. The stack's /health uses it.
func (r *Router) Ready() bool {
	for _, ep := range r.endpoints {
		ep.mu.Lock()
		ok := ep.healthy && ep.models != nil
		ep.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// ServeHTTP answers POST /v1/chat/completions, /v1/completions and /v1/embeddings by proxying to
// the picked endpoint, and GET /v1/models with the union of the healthy endpoints' models. Other
// paths get a 404 and a wrong method a 405, both as the OpenAI error envelope.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch path := req.URL.Path; path {
	case openai.PathChatCompletions, openai.PathCompletions, openai.PathEmbeddings:
		if req.Method != http.MethodPost {
			methodNotAllowed(w, req, http.MethodPost)
			return
		}
		r.serveInference(w, req)
	case openai.PathModels:
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			methodNotAllowed(w, req, http.MethodGet)
			return
		}
		r.serveModels(w)
	default:
		openai.WriteError(w, openai.NotFound("Invalid URL (%s %s)", req.Method, path))
	}
}

func methodNotAllowed(w http.ResponseWriter, req *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	openai.WriteError(w, openai.Errorf(http.StatusMethodNotAllowed, openai.TypeInvalidRequest, "method_not_allowed",
		"Method %s is not allowed for %s; use %s.", req.Method, req.URL.Path, allow))
}

// serveModels writes {"object":"list","data":[...]}: each model of a healthy endpoint once, in
// config order, as the engine's own object when it was discovered (vLLM adds root, parent,
// max_model_len, permission) or as {"id","object":"model","created","owned_by":"strata"}.
func (r *Router) serveModels(w http.ResponseWriter) {
	data := []json.RawMessage{}
	seen := map[string]bool{}
	for _, ep := range r.endpoints {
		ep.mu.Lock()
		if ep.healthy {
			for i, id := range ep.models {
				if !seen[id] {
					seen[id] = true
					data = append(data, ep.modelObjs[i])
				}
			}
		}
		ep.mu.Unlock()
	}
	body, err := json.Marshal(struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}{"list", data})
	if err != nil { // only if an engine's object was not valid JSON, which discovery rules out
		openai.WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// call is one inference request on its way through the router.
type call struct {
	body   []byte
	ir     *openai.InferenceRequest
	sreq   *scheduling.Request
	model  string                     // metric label: ir.Model when some endpoint serves it, else ""
	fields map[string]json.RawMessage // the body's top-level fields, decoded only for P/D legs
}

// decision is where a request goes: ep, and for a disaggregated request also the prefill
// endpoint. Both count the request in flight from the decision until their leg ends.
type decision struct {
	ep      *endpoint
	prefill *endpoint // nil: no prefill leg (or it is over)
	tokens  int       // the estimated prompt tokens counted in flight
	hit     float64   // estimated cached fraction of the prompt on ep, for the prefix metrics
}

// serveInference reads and parses the request, passes flow control (which may queue it or
// refuse it), then sends it to the chosen endpoint and relays the answer. A failure before the
// first response byte (connection refused or reset, or a 502/503 answer) is retried on another
// endpoint, up to MaxAttempts endpoints in all, never after a byte was relayed; a refused
// connection also marks the endpoint unhealthy. When every attempt fails the client gets the last
// engine answer, or 503 (connections refused) or a detail-free 502, logged once here.
func (r *Router) serveInference(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.fail(w, "", "", err)
		return
	}
	ir, err := openai.ParseInferenceRequest(req.URL.Path, body)
	if err != nil {
		r.fail(w, "", "", err)
		return
	}
	c := &call{body: body, ir: ir}
	c.sreq, c.model = r.schedRequest(ir, req.Header)
	// kv_transfer_params from a client would make an engine read KV blocks from any host it
	// names (vLLM NixlConnector): only the router's own P/D legs may carry them, as llm-d's
	// sidecar guards its prefiller host against SSRF. The cheap byte test keeps the common body
	// unparsed.
	if r.profiles.prefill != nil || bytes.Contains(body, []byte(fieldKVTransferParams)) {
		if err := json.Unmarshal(body, &c.fields); err != nil {
			r.fail(w, c.model, "", openai.InvalidRequest("", openai.CodeInvalidJSON, "The body is not a JSON object."))
			return
		}
		if _, ok := c.fields[fieldKVTransferParams]; ok {
			delete(c.fields, fieldKVTransferParams)
			if c.body, err = json.Marshal(c.fields); err != nil {
				r.fail(w, c.model, "", err)
				return
			}
		}
		if r.profiles.prefill == nil || req.URL.Path == openai.PathEmbeddings {
			c.fields = nil // no P/D legs for this request
		}
	}
	d, err := r.flow.admit(req.Context(), c)
	if err != nil {
		if errors.Is(err, errShed) || errors.Is(err, errQueueFull) || errors.Is(err, errQueueTTL) {
			// Saturation passes within scrapes, not minutes: OpenAI's clients honour retry-after.
			w.Header().Set(openai.HeaderRetryAfter, "1")
		}
		switch {
		case errors.Is(err, scheduling.ErrModelNotServed):
			err = openai.ModelNotFound(ir.Model)
		case errors.Is(err, scheduling.ErrNoEndpoint):
			err = openai.ErrNoCapacity
		}
		r.fail(w, c.model, "", err)
		return
	}
	r.execute(w, req, c, d)
}

// schedRequest is what the scheduler reads of a parsed request and its headers (the objective,
// fairness id and session hints), with the request's metric label for the model.
func (r *Router) schedRequest(ir *openai.InferenceRequest, h http.Header) (*scheduling.Request, string) {
	label, lora := r.modelInfo(ir.Model)
	sreq := &scheduling.Request{Model: ir.Model, PromptParts: promptParts(ir), Session: h.Get(openai.HeaderSession),
		Messages: ir.Messages, Objective: h.Get(openai.HeaderObjective), FairnessID: h.Get(openai.HeaderFairnessID)}
	if len(ir.Messages) == 0 {
		sreq.Prompt = ir.PromptText()
		// A prompt given as one list of token ids is exactly what the engine caches (vLLM adds no
		// BOS to it), so the precise prefix scorer can use it without tokenizing.
		var ids []int
		if json.Unmarshal(ir.Prompt, &ids) == nil && len(ids) > 0 {
			sreq.TokenIDs = ids
		}
	}
	if lora {
		sreq.LoRA = ir.Model
	}
	sreq.PromptTokens = estimateTokens(sreq.PromptParts)
	return sreq, label
}

// execute sends c along d, retrying on another endpoint while nothing was relayed, and relays
// the answer.
func (r *Router) execute(w http.ResponseWriter, req *http.Request, c *call, d *decision) {
	for attempt := 1; ; attempt++ {
		resp, err := r.runLegs(req, c, d)
		switch {
		case err == nil && resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable:
			r.relay(w, req, resp, c, d)
			return
		case req.Context().Err() != nil:
			if resp != nil {
				_ = resp.Body.Close()
			}
			r.release(d)
			r.fail(w, c.model, d.ep.name, req.Context().Err())
			return
		case err != nil && isDialError(err):
			if d.ep.setHealthy(false) {
				r.log.Warn("endpoint unhealthy: connection failed", "endpoint", d.ep.name, "err", err)
			}
		case err != nil:
			r.log.Warn("upstream request failed before the first byte", "endpoint", d.ep.name, "path", req.URL.Path, "attempt", attempt, "err", err)
		}
		c.sreq.Exclude = append(c.sreq.Exclude, d.ep.name)
		var next *decision
		perr := errors.New("no attempt left")
		if attempt < r.cfg.MaxAttempts {
			next, perr = r.decide(c, false, reasonRetry)
		}
		if perr != nil {
			switch {
			case resp != nil: // the engine's own 502/503 answer, as it is
				r.relay(w, req, resp, c, d)
			case isDialError(err):
				r.release(d)
				r.fail(w, c.model, "", openai.ErrNoCapacity)
			default:
				r.release(d)
				r.fail(w, c.model, d.ep.name, openai.ErrUpstream)
			}
			return
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		r.release(d)
		r.metrics.retries.Inc()
		d = next
	}
}

// decide snapshots every endpoint and picks c's endpoint(s) under pickMu, counting them in
// flight. Prefill-only endpoints never take a whole request. With checkSaturation, it returns
// errSaturated instead when every candidate is saturated. With P/D profiles, it also picks a
// prefill endpoint when the uncached prompt reaches the threshold. Errors wrap
// scheduling.ErrNoEndpoint otherwise.
func (r *Router) decide(c *call, checkSaturation bool, reason string) (*decision, error) {
	start := time.Now() // CPU cost of a decision: wall time even when clk is virtual
	r.pickMu.Lock()
	defer r.pickMu.Unlock()
	now := r.clk.Now()
	snaps := make([]scheduling.Endpoint, len(r.endpoints))
	cands := make([]*scheduling.Endpoint, 0, len(r.endpoints))
	for i, ep := range r.endpoints {
		ep.snapshot(now, r.cfg.StaleAfter.D(), &snaps[i])
		if snaps[i].Role != scheduling.RolePrefill {
			cands = append(cands, &snaps[i])
		}
	}
	main := &r.profiles.main
	if checkSaturation && allSaturated(c.sreq, cands, r.cfg.FlowControl.Saturation) {
		return nil, errSaturated // counted by the flow control, once per request
	}
	hits := main.estimateHits(c.sreq, cands)
	chosen, err := main.sched.Schedule(c.sreq, cands)
	if err != nil {
		r.metrics.decisions.WithLabelValues(main.name, reasonNoEndpoint).Inc()
		return nil, err
	}
	i := slices.Index(cands, chosen)
	if i < 0 {
		return nil, fmt.Errorf("picker returned an endpoint that was not a candidate: %w", scheduling.ErrNoEndpoint)
	}
	d := &decision{ep: r.endpointOf(snaps, chosen), tokens: c.sreq.PromptTokens, hit: hits[i]}
	d.ep.begin(d.tokens)
	if pf := r.profiles.prefill; pf != nil && c.fields != nil {
		uncached := float64(c.sreq.PromptTokens) * (1 - d.hit)
		if uncached >= float64(r.profiles.threshold) {
			d.prefill = r.pickPrefill(pf, c, snaps, chosen.Name, nil, reasonDisaggregated)
		}
		if d.prefill != nil {
			reason = reasonDisaggregated
		} else if reason == reasonFirst {
			reason = reasonDecodeOnly
		}
	}
	r.metrics.decisions.WithLabelValues(main.name, reason).Inc()
	r.metrics.pickDuration.Observe(time.Since(start).Seconds())
	return d, nil
}

// pickPrefill runs the prefill profile over the endpoints that may prefill (role prefill or
// both), other than the decode endpoint and those of exclude, and counts the chosen one in
// flight (metric reason: reason). nil: none. pickMu is held.
func (r *Router) pickPrefill(pf *profile, c *call, snaps []scheduling.Endpoint, decode string, exclude []string, reason string) *endpoint {
	cands := make([]*scheduling.Endpoint, 0, len(snaps))
	for i := range snaps {
		if snaps[i].Role != scheduling.RoleDecode && snaps[i].Name != decode {
			cands = append(cands, &snaps[i])
		}
	}
	// A request of its own: plugins keep per-request state (the prefix hashes) in it.
	preq := &scheduling.Request{Model: c.sreq.Model, PromptParts: c.sreq.PromptParts, PromptTokens: c.sreq.PromptTokens,
		Session: c.sreq.Session, Messages: c.sreq.Messages, Prompt: c.sreq.Prompt, TokenIDs: c.sreq.TokenIDs,
		LoRA: c.sreq.LoRA, Objective: c.sreq.Objective, FairnessID: c.sreq.FairnessID, Exclude: exclude}
	chosen, err := pf.sched.Schedule(preq, cands)
	if err != nil {
		r.metrics.decisions.WithLabelValues(pf.name, reasonNoEndpoint).Inc()
		return nil
	}
	ep := r.endpointOf(snaps, chosen)
	if ep == nil {
		return nil
	}
	ep.begin(c.sreq.PromptTokens)
	r.metrics.decisions.WithLabelValues(pf.name, reason).Inc()
	return ep
}

// endpointOf maps a snapshot back to its endpoint.
func (r *Router) endpointOf(snaps []scheduling.Endpoint, s *scheduling.Endpoint) *endpoint {
	for i := range snaps {
		if &snaps[i] == s {
			return r.endpoints[i]
		}
	}
	return nil
}

// done ends one leg's in-flight accounting on ep and lets queued requests try the freed room.
func (r *Router) done(ep *endpoint, tokens int) {
	ep.end(tokens)
	r.flow.dispatch()
}

// release ends every leg of d still in flight.
func (r *Router) release(d *decision) {
	if d.prefill != nil {
		d.prefill.end(d.tokens)
		d.prefill = nil
	}
	r.done(d.ep, d.tokens)
}

// HandleKVEvents applies engine KV-cache events of the endpoint named endpoint
// (config engines[].name) to every profile's scheduler, whose KV-event-consuming plugins (the
// precise prefix-cache scorer) update their index. Safe for concurrent use; events of one
// endpoint must arrive in the engine's order.
func (r *Router) HandleKVEvents(endpoint string, events []scheduling.KVEvent) {
	for _, s := range r.profiles.schedulers() {
		s.HandleKVEvents(endpoint, events)
	}
}

func (r *Router) snapshotOne(ep *endpoint, now time.Time) scheduling.Endpoint {
	var s scheduling.Endpoint
	ep.snapshot(now, r.cfg.StaleAfter.D(), &s)
	return s
}

// send forwards body to the endpoint's base URL + the request path (query kept), with the
// request's headers plus extra.
func (r *Router) send(in *http.Request, ep *endpoint, body []byte, extra http.Header) (*http.Response, error) {
	out := openai.NewUpstreamRequest(in, bytes.NewReader(body), int64(len(body)))
	out.URL.Scheme, out.URL.Host = ep.base.Scheme, ep.base.Host
	out.URL.Path, out.URL.RawPath = ep.base.Path+in.URL.Path, ""
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	for k, v := range extra {
		out.Header[k] = v
	}
	return r.transport.RoundTrip(out)
}

// relay writes the engine's answer (any status: vLLM's own 4xx errors pass through as they are)
// with the served-endpoint header, then ends the request's in-flight accounting. While relaying
// it notes the answer's usage (prompt and cached tokens) for the prefix-estimate metrics.
func (r *Router) relay(w http.ResponseWriter, req *http.Request, resp *http.Response, c *call, d *decision) {
	defer r.release(d)
	ep := d.ep
	resp.Header.Del(openai.HeaderEndpointServed)
	served := ep.served
	if c.sreq != nil && c.sreq.LoRA != "" {
		served += ";adapter=" + c.sreq.LoRA
	}
	w.Header().Set(openai.HeaderEndpointServed, served)
	r.metrics.requests.WithLabelValues(c.model, ep.name, strconv.Itoa(resp.StatusCode)).Inc()
	scan := newUsageScanner(resp.Body)
	resp.Body = scan
	if err := openai.Relay(w, resp); err != nil && req.Context().Err() == nil {
		r.log.Warn("relaying the answer was cut short", "endpoint", ep.name, "path", req.URL.Path, "err", err)
	}
	if prompt, cached, ok := scan.result(); ok && resp.StatusCode == http.StatusOK && prompt > 0 {
		est := d.hit * float64(prompt)
		r.metrics.prefixEstimated.WithLabelValues(ep.name).Add(est)
		r.metrics.prefixCached.WithLabelValues(ep.name).Add(float64(cached))
		r.metrics.prefixPrompt.WithLabelValues(ep.name).Add(float64(prompt))
		r.metrics.prefixError.Observe((est - float64(cached)) / float64(prompt))
	}
}

// fail answers err (mapped by openai.AsError) and counts it.
func (r *Router) fail(w http.ResponseWriter, model, endpoint string, err error) {
	e := openai.AsError(err)
	r.metrics.requests.WithLabelValues(model, endpoint, strconv.Itoa(e.Status)).Inc()
	openai.WriteError(w, e)
}

// modelInfo returns model as a metric label when some endpoint lists it, else "" (a client
// cannot grow the label set), and whether some endpoint lists it as a LoRA adapter.
func (r *Router) modelInfo(model string) (label string, lora bool) {
	for _, ep := range r.endpoints {
		ep.mu.Lock()
		known := slices.Contains(ep.models, model)
		adapter := slices.Contains(ep.adapters, model)
		ep.mu.Unlock()
		if known || adapter {
			label = model
		}
		lora = lora || adapter
	}
	return label, lora
}

// isDialError reports whether err happened while connecting, so the request was never sent and
// may go to another endpoint (connection refused, no route, DNS failure, dial timeout).
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// promptParts splits the prompt at message boundaries: one "role: content\n" per chat message, or
// the completion / embeddings prompt whole. Concatenated, the parts equal ir.PromptText().
func promptParts(ir *openai.InferenceRequest) []string {
	if len(ir.Messages) == 0 {
		return []string{ir.PromptText()}
	}
	parts := make([]string, len(ir.Messages))
	for i, m := range ir.Messages {
		parts[i] = m.Role + ": " + m.ContentText() + "\n"
	}
	return parts
}

// estimateTokens is the usual 4 characters per token of English BPE vocabularies, rounded up; it
// only weighs in-flight load, so being approximate is fine.
func estimateTokens(parts []string) int {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	return (n + 3) / 4
}

var _ http.Handler = (*Router)(nil)

// errStatus is returned by fetch for a non-2xx answer.
type errStatus int

func (e errStatus) Error() string { return "status " + strconv.Itoa(int(e)) }

// fetch GETs path on ep within ScrapeTimeout and returns the body (at most limit bytes).
func (r *Router) fetch(ctx context.Context, ep *endpoint, path string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ScrapeTimeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.url(path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, errStatus(resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s answer larger than %d bytes", path, limit)
	}
	return b, nil
}
