// Package router is Strata's data plane: it answers "where should this request run?". It keeps
// soft state about each engine replica (health, served models, scraped vLLM metrics, its own
// in-flight accounting), picks a replica per request with the scheduler in
// internal/router/scheduling (filters -> weighted scorers -> picker), and proxies the request
// there, relaying the answer (streams chunk by chunk).
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
	"github.com/strata-inference/strata/internal/router/plugins"
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
	sched     *scheduling.Scheduler

	// pickMu serialises decisions so each one sees the in-flight counts and prefix blocks of the
	// previous one: a burst of requests sharing a prefix then lands on one replica and a burst of
	// cold requests spreads, instead of all racing to the same "idle" replica.
	pickMu sync.Mutex
}

// New returns a router over engines (at least one; names unique; base URLs without /v1). Engines
// without Models have them discovered from their GET /v1/models at each health round until found.
// Zero durations and sizes in cfg take their config.Default() values; nil weights too, and a
// weight of 0 disables its scorer. cfg.Scheduler, when set, replaces the default profile (built
// from the weights and prefix sizes, see plugins.DefaultProfile); an invalid one is an error
// naming the plugin and field. transport reaches the engines (nil: http.DefaultTransport);
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
	if r.sched, err = plugins.Build(cfg, src); err != nil {
		return nil, fmt.Errorf("router.scheduler: %w", err)
	}
	log.Debug("scheduler profile", "profile", r.sched.String())
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

// serveInference reads and parses the request, picks an endpoint, sends the body unchanged, and
// relays the answer. A refused connection (nothing was sent) marks the endpoint unhealthy and
// tries the next best one, up to MaxAttempts endpoints; when all refuse the answer is 503. Any
// other transport error is a detail-free 502, logged once here.
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
	model := r.modelLabel(ir.Model)
	sreq := &scheduling.Request{Model: ir.Model, PromptParts: promptParts(ir), Session: req.Header.Get(openai.HeaderSession)}
	sreq.PromptTokens = estimateTokens(sreq.PromptParts)
	for attempt := 1; ; attempt++ {
		ep, err := r.pick(sreq)
		if err != nil {
			if errors.Is(err, scheduling.ErrModelNotServed) {
				r.fail(w, model, "", openai.ModelNotFound(ir.Model))
			} else {
				r.fail(w, model, "", openai.ErrNoCapacity)
			}
			return
		}
		resp, err := r.send(req, ep, body)
		if err == nil {
			r.relay(w, req, resp, ep, model, sreq.PromptTokens)
			return
		}
		ep.end(sreq.PromptTokens)
		switch {
		case req.Context().Err() != nil:
			r.fail(w, model, ep.name, req.Context().Err())
			return
		case isDialError(err):
			if ep.setHealthy(false) {
				r.log.Warn("endpoint unhealthy: connection failed", "endpoint", ep.name, "err", err)
			}
			sreq.Exclude = append(sreq.Exclude, ep.name)
			if attempt >= r.cfg.MaxAttempts {
				r.fail(w, model, "", openai.ErrNoCapacity)
				return
			}
			r.metrics.retries.Inc()
		default:
			r.log.Warn("upstream request failed", "endpoint", ep.name, "path", req.URL.Path, "err", err)
			r.fail(w, model, ep.name, openai.ErrUpstream)
			return
		}
	}
}

// pick snapshots every endpoint, runs the scheduler and counts the request in flight on the
// chosen endpoint, all under pickMu.
func (r *Router) pick(req *scheduling.Request) (*endpoint, error) {
	start := time.Now() // CPU cost of a decision: wall time even when clk is virtual
	r.pickMu.Lock()
	defer r.pickMu.Unlock()
	now := r.clk.Now()
	snaps := make([]scheduling.Endpoint, len(r.endpoints))
	eps := make([]*scheduling.Endpoint, len(r.endpoints))
	for i, ep := range r.endpoints {
		ep.snapshot(now, r.cfg.StaleAfter.D(), &snaps[i])
		eps[i] = &snaps[i]
	}
	chosen, err := r.sched.Schedule(req, eps)
	if err != nil {
		return nil, err
	}
	for i := range snaps {
		if &snaps[i] == chosen {
			ep := r.endpoints[i]
			ep.begin(req.PromptTokens)
			r.metrics.pickDuration.Observe(time.Since(start).Seconds())
			return ep, nil
		}
	}
	return nil, fmt.Errorf("picker returned an endpoint that was not a candidate: %w", scheduling.ErrNoEndpoint)
}

func (r *Router) snapshotOne(ep *endpoint, now time.Time) scheduling.Endpoint {
	var s scheduling.Endpoint
	ep.snapshot(now, r.cfg.StaleAfter.D(), &s)
	return s
}

// send forwards body unchanged to the endpoint's base URL + the request path (query kept).
func (r *Router) send(in *http.Request, ep *endpoint, body []byte) (*http.Response, error) {
	out := openai.NewUpstreamRequest(in, bytes.NewReader(body), int64(len(body)))
	out.URL.Scheme, out.URL.Host = ep.base.Scheme, ep.base.Host
	out.URL.Path, out.URL.RawPath = ep.base.Path+in.URL.Path, ""
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r.transport.RoundTrip(out)
}

// relay writes the engine's answer (any status: vLLM's own 4xx errors pass through as they are)
// with the served-endpoint header, then ends the request's in-flight accounting.
func (r *Router) relay(w http.ResponseWriter, req *http.Request, resp *http.Response, ep *endpoint, model string, tokens int) {
	defer ep.end(tokens)
	resp.Header.Del(openai.HeaderEndpointServed)
	w.Header().Set(openai.HeaderEndpointServed, ep.served)
	r.metrics.requests.WithLabelValues(model, ep.name, strconv.Itoa(resp.StatusCode)).Inc()
	if err := openai.Relay(w, resp); err != nil && req.Context().Err() == nil {
		r.log.Warn("relaying the answer was cut short", "endpoint", ep.name, "path", req.URL.Path, "err", err)
	}
}

// fail answers err (mapped by openai.AsError) and counts it.
func (r *Router) fail(w http.ResponseWriter, model, endpoint string, err error) {
	e := openai.AsError(err)
	r.metrics.requests.WithLabelValues(model, endpoint, strconv.Itoa(e.Status)).Inc()
	openai.WriteError(w, e)
}

// modelLabel is model when some endpoint lists it, else "": a client cannot grow the label set.
func (r *Router) modelLabel(model string) string {
	for _, ep := range r.endpoints {
		ep.mu.Lock()
		known := slices.Contains(ep.models, model)
		ep.mu.Unlock()
		if known {
			return model
		}
	}
	return ""
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
