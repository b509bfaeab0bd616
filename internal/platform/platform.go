// Package platform is Strata's workflow layer: the top of the chain
// (platform -> gateway -> router -> engine), answering *what* workflow runs.
//
// It passes the inference endpoints (chat completions, completions, embeddings, models) through
// to the layer below unchanged, and owns the OpenAI Responses, Conversations, Files and Vector
// Stores APIs. POST /v1/responses runs an agent loop (loop.go): one POST /v1/chat/completions
// per iteration on the layer below, with the function tools translated to chat tools; calls of
// client-side functions are returned as function_call items, server-side tools (file_search, mcp)
// run in the platform and the model is called again, up to max_infer_iters. History comes from
// a previous_response_id chain or a conversation, both in the store; every call carries
// X-Strata-Session so the router keeps the loop on a warm replica. Every stored object belongs
// to the caller's tenant, asked of the gateway below (identity.go), or to the API key without
// a gateway.
package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
	"github.com/strata-inference/strata/internal/telemetry"
)

// Platform is the workflow layer's http.Handler. It is safe for concurrent use.
type Platform struct {
	cfg  config.Platform
	st   *store.Store
	next http.RoundTripper
	clk  clock.PassiveClock
	log  *slog.Logger
	mux  *http.ServeMux

	// builtins are server-side tools offered to every response; the seam file_search and mcp
	// plug into (tests set it today).
	builtins []serverTool
	bg       background
	ids      *identityResolver
	writer   responseWriter // group commit of new responses (storewriter.go)
	// mcpClosing counts MCP sessions being closed after their response (mcp.go).
	mcpClosing sync.WaitGroup

	requests        *prometheus.CounterVec
	responseSeconds prometheus.Histogram
	mcpRequests     *prometheus.CounterVec
}

var _ http.Handler = (*Platform)(nil)

// New returns the platform layer. st holds stored responses; next reaches the layer below
// (gateway, router or an engine) with the same OpenAI API; clk times requests (nil means the
// real clock); metrics are registered on reg (nil means a private registry):
//
//	strata_platform_requests_total{path,code}   requests answered, by route and HTTP status
//	strata_platform_response_seconds            time to answer POST /v1/responses, streams
//	                                            included, in seconds
//	strata_platform_mcp_requests_total{op,outcome}  MCP requests to remote servers: op
//	                                            list_tools | call_tool; outcome ok,
//	                                            tool_error, protocol_error, timeout,
//	                                            unreachable
//
// Errors: a missing store or next, or a metric already registered on reg.
func New(cfg config.Platform, st *store.Store, next http.RoundTripper, clk clock.Clock,
	reg prometheus.Registerer, log *slog.Logger) (*Platform, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	if st == nil {
		return nil, errors.New("platform: a store is required")
	}
	if next == nil {
		return nil, errors.New("platform: a next RoundTripper is required")
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Platform{
		cfg: cfg, st: st, next: next, clk: clk, log: log, mux: http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_platform_requests_total",
			Help: "Requests answered by the platform layer, by route and HTTP status code.",
		}, []string{"path", "code"}),
		responseSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_platform_response_seconds",
			Help:    "Time to answer POST /v1/responses, until the last event of a stream, in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.025, 2, 13), // 25ms .. 102s
		}),
		mcpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_platform_mcp_requests_total",
			Help: "Requests of the mcp tool to remote MCP servers, by operation (list_tools, call_tool) and outcome (ok, tool_error, protocol_error, timeout, unreachable).",
		}, []string{"op", "outcome"}),
	}
	p.ids = newIdentityResolver(p)
	p.writer.st = st
	for _, c := range []prometheus.Collector{p.requests, p.responseSeconds, p.mcpRequests} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("platform: register metrics: %w", err)
		}
	}

	p.route("POST "+openai.PathChatCompletions, openai.PathChatCompletions, p.passThrough)
	p.route("POST "+openai.PathCompletions, openai.PathCompletions, p.passThrough)
	p.route("POST "+openai.PathEmbeddings, openai.PathEmbeddings, p.passThrough)
	p.route("GET "+openai.PathModels, openai.PathModels, p.passThrough)
	p.routeOwned("POST "+openai.PathResponses, openai.PathResponses, p.createResponse)
	p.route("GET "+openai.PathResponses+"/{id}", openai.PathResponses+"/{id}", p.getResponse)
	p.routeOwned("DELETE "+openai.PathResponses+"/{id}", openai.PathResponses+"/{id}", p.deleteResponse)
	p.route("POST "+openai.PathResponses+"/{id}/cancel", openai.PathResponses+"/{id}/cancel", p.cancelResponse)
	p.route("GET "+openai.PathResponses+"/{id}/input_items", openai.PathResponses+"/{id}/input_items", p.listInputItems)
	p.routeConversations()
	p.routeFiles()
	p.routeVectorStores()
	p.route("/", "other", func(w http.ResponseWriter, r *http.Request) {
		// OpenAI's answer for a route it does not have (or a method a route does not take).
		openai.WriteError(w, &openai.Error{Status: http.StatusNotFound, Type: openai.TypeInvalidRequest,
			Message: fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path)})
	})
	return p, nil
}

// ServeHTTP answers the platform's routes; see the package documentation.
func (p *Platform) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// route registers h for pattern, counting its answers under the path label.
func (p *Platform) route(pattern, path string, h http.HandlerFunc) {
	p.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		sw := &telemetry.StatusWriter{ResponseWriter: w}
		h(sw, r)
		p.requests.WithLabelValues(path, strconv.Itoa(sw.Status())).Inc()
	})
}

// routeOwned registers h for pattern like route, for the routes of objects the caller owns:
// the owner token (the caller's tenant, identity.go) is resolved before h runs, and a request
// without a key, or with one the gateway refuses, is answered 401 without reaching h, so no
// owned route can forget the check.
func (p *Platform) routeOwned(pattern, path string, h func(w http.ResponseWriter, r *http.Request, owner string)) {
	p.route(pattern, path, func(w http.ResponseWriter, r *http.Request) {
		owner, err := p.ownerOf(r)
		if err != nil {
			p.fail(w, err)
			return
		}
		h(w, r, owner)
	})
}

// passThrough forwards an inference request to the layer below with its body bytes unchanged,
// and relays the answer chunk by chunk. The platform reads nothing of it: no JSON parsing.
func (p *Platform) passThrough(w http.ResponseWriter, r *http.Request) {
	out := openai.NewUpstreamRequest(r, r.Body, r.ContentLength)
	if r.ContentLength == 0 {
		out.Body = http.NoBody // a GET: no chunked empty body on the wire
	}
	resp, err := p.next.RoundTrip(out)
	if err != nil {
		openai.WriteError(w, p.transportError(r, err))
		return
	}
	if err := openai.Relay(w, resp); err != nil && r.Context().Err() == nil {
		p.log.Warn("relay cut short", "path", r.URL.Path, "err", err)
	}
}

// transportError maps a failed RoundTrip to what the client sees: its own cancellation, or a
// detail-free 502 (the detail goes to the log).
func (p *Platform) transportError(r *http.Request, err error) error {
	if ctxErr := r.Context().Err(); ctxErr != nil {
		return ctxErr
	}
	p.log.Warn("layer below unreachable", "path", r.URL.Path, "err", err)
	return openai.ErrUpstream
}

// errNoKey is OpenAI's answer to a request without an API key.
var errNoKey = openai.Unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")

// isCanceled reports whether err is the client going away.
func isCanceled(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled)
}
