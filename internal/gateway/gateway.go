// Package gateway is Strata's tenant plane: it answers *who* may call, under what policy, and what
// they owe. It sits between the platform and the router as an http.Handler that speaks the
// OpenAI API and reaches the layer below through an http.RoundTripper.
//
// Per inference request it authenticates the API key (keys.go, auth.go), checks the tenant's
// model allowlist, admits the request against the tenant's requests-per-minute and
// tokens-per-minute limits (limits.go, GCRA), forwards it with the fairness header, and meters
// the engine's usage into one durable record per request id (meter.go). Admin operations on
// tenants and keys live in admin.go. See README.md for the behaviour in one place.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
	"github.com/strata-inference/strata/internal/telemetry"
)

// DefaultOutputEstimate is the completion tokens charged at admission to a request that sets no
// max_tokens / max_completion_tokens; the charge is settled with the engine's usage afterwards.
const DefaultOutputEstimate = 256

// maxRequestIDLen bounds a client-supplied X-Request-Id; a longer or non-printable one is
// replaced by a generated id.
const maxRequestIDLen = 128

// Gateway is the tenant plane's http.Handler. It is safe for concurrent use.
type Gateway struct {
	cfg     config.Gateway
	st      *store.Store
	secret  []byte
	next    http.RoundTripper
	clk     clock.Clock
	log     *slog.Logger
	m       *metrics
	auth    *authenticator
	backend backend
	prices  *prices
	loc     *time.Location // billing time zone: calendar months of quotas and spend caps
	slo     *sloMetrics    // per-tier latency SLOs (slo.go)
	iolog   *ioLog         // opt-in per-tenant I/O log (iolog.go)
	touches *toucher       // write-behind of api_keys.last_used_at (auth.go)
	authAud *authAuditor   // coalesced audit entries of refused authentications (auth.go)
	// stepAdmission forces one backend call per admission check even when the backend can decide
	// them all at once (tests and the before/after benchmark).
	stepAdmission bool

	ledger   *ledger                      // group-commit writer of usage records (ledger.go)
	exporter *exporter                    // CloudEvents delivery of usage records; nil without export (export.go)
	mm       *meterMetrics                // metering counters (ledger.go)
	inflight sync.Map                     // request id -> struct{}: the requests this gateway is serving
	recent   *lru.Cache[string, struct{}] // request ids this gateway metered lately (ledger.go)
}

// New returns a gateway over the store st (tenants, keys, usage), hashing keys with secret (at
// least 32 bytes, see LoadOrCreateSecret) and forwarding admitted requests to next. clk times
// rate limits, TTFT and durations; reg receives the strata_gateway_* metrics. A nil clk, reg or
// log means the real clock, a private registry, and no logging.
func New(cfg config.Gateway, st *store.Store, secret []byte, next http.RoundTripper, clk clock.Clock,
	reg prometheus.Registerer, log *slog.Logger) (*Gateway, error) {
	switch {
	case st == nil:
		return nil, errors.New("gateway: nil store")
	case next == nil:
		return nil, errors.New("gateway: nil next layer")
	case len(secret) < SecretBytes:
		return nil, fmt.Errorf("gateway: key secret of %d bytes, want at least %d", len(secret), SecretBytes)
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
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	loc, err := cfg.Location()
	if err != nil {
		return nil, fmt.Errorf("gateway: billing time zone: %w", err)
	}
	if cfg.Admission.ReservationTTL <= 0 {
		cfg.Admission.ReservationTTL = config.Duration(10 * time.Minute)
	}
	var be backend
	switch cfg.Admission.Backend {
	case "", "memory":
		be = newMemoryBackend(clk)
	case "redis":
		if be, err = newRedisBackend(cfg.Admission.RedisURL, cfg.Admission.KeyPrefix); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("gateway: unknown admission backend %q", cfg.Admission.Backend)
	}
	g := &Gateway{cfg: cfg, st: st, secret: secret, next: next, clk: clk, log: log, m: m, backend: be, loc: loc,
		prices: &prices{st: st, ttl: max(cfg.AuthCacheTTL.D(), time.Second)}}
	g.auth = newAuthenticator(st, secret, cfg.AuthCacheTTL.D(), clk, log, func(reason string) { m.authFailures.WithLabelValues(reason).Inc() })
	g.auth.cfg = &g.cfg
	if err := g.initBackground(reg); err != nil {
		return nil, err
	}
	if err := g.initMetering(reg); err != nil {
		return nil, err
	}
	return g, nil
}

// Close commits the usage records already handed to the ledger and stops the export of usage
// records (undelivered events stay in the outbox for the next start), then releases the
// admission backend's connections (Redis); the gateway must not serve after. Call it before
// closing the store.
func (g *Gateway) Close() error {
	g.closeMetering()
	g.closeBackground()
	return g.backend.Close()
}

// ServeHTTP serves POST /v1/chat/completions, /v1/completions and /v1/embeddings (authenticated,
// allowlisted, rate limited, metered), GET /v1/models and GET /v1/models/{id} (authenticated,
// filtered by the allowlist). Any other request is authenticated and then answered 404, so
// neither unauthenticated nor authenticated callers reach other endpoints of the layers below.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw := &telemetry.StatusWriter{ResponseWriter: w}
	defer func() { g.m.requests.WithLabelValues(strconv.Itoa(cw.Status())).Inc() }()
	switch path := r.URL.Path; {
	case r.Method == http.MethodPost && (path == openai.PathChatCompletions || path == openai.PathCompletions || path == openai.PathEmbeddings):
		g.serveInference(cw, r)
	case r.Method == http.MethodGet && path == openai.PathModels:
		g.serveModels(cw, r, "")
	case r.Method == http.MethodGet && path == PathIdentity:
		g.serveIdentity(cw, r)
	case r.Method == http.MethodGet && strings.HasPrefix(path, openai.PathModels+"/") && len(path) > len(openai.PathModels)+1:
		g.serveModels(cw, r, strings.TrimPrefix(path, openai.PathModels+"/"))
	default:
		if _, err := g.auth.authenticate(r.Context(), r.Header); err != nil {
			openai.WriteError(cw, err)
			return
		}
		openai.WriteError(cw, openai.NotFound("Invalid URL (%s %s)", r.Method, path))
	}
}

// serveInference is the admission pipeline of one inference request: each step either passes or
// answers the client and ends the request. Nothing before the forward writes a usage record.
func (g *Gateway) serveInference(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	start := g.clk.Now()
	p, err := g.auth.authenticate(ctx, r.Header)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		openai.WriteError(w, err) // *http.MaxBytesError from the front door becomes 413
		return
	}
	received := body
	req, err := openai.ParseInferenceRequest(r.URL.Path, body)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	if !p.policy.allows(req.Model) {
		openai.WriteError(w, openai.ModelNotFound(req.Model)) // same answer as an unknown model
		return
	}
	outLimit, body, err := applyOutputPolicy(r.URL.Path, body, req, &p.policy)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	estimate, strict := estimateTokens(r.URL.Path, req)
	outTokens := satMul(max(outLimit, 0), nOf(req))
	if _, asked := req.OutputLimit(); !asked && outLimit > 0 {
		estimate = satAdd(promptEstimate(req), outTokens) // the policy's default, not the caller's
	}
	if outLimit == 0 && r.URL.Path != openai.PathEmbeddings {
		outTokens = satMul(DefaultOutputEstimate, nOf(req))
	}
	requestID := requestIDOf(r.Header)
	w.Header().Set(openai.HeaderRequestID, requestID)
	release, err := g.claimRequestID(requestID)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	defer release()
	tk, adm, err := g.admit(ctx, w.Header(), p, req.Model, estimate, strict, outTokens, promptEstimate(req))
	adm.setHeaders(w.Header())
	if err != nil {
		openai.WriteError(w, err)
		return
	}

	var wantsUsage, wantsChunks bool
	stream := req.Stream && r.URL.Path != openai.PathEmbeddings
	if stream {
		if body, wantsUsage, wantsChunks, err = forceStreamUsage(body); err != nil {
			tk.cancel(ctx)
			openai.WriteError(w, err) // unreachable for a body ParseInferenceRequest accepted
			return
		}
	}
	out := openai.NewUpstreamRequest(r, bytes.NewReader(body), int64(len(body)))
	g.setDownstreamHeaders(out.Header, p, requestID)

	resp, err := g.next.RoundTrip(out)
	if err != nil {
		tk.cancel(ctx)
		g.answerTransportError(ctx, w, err)
		return
	}
	mt := &metered{
		g: g, p: p, path: r.URL.Path, req: req, requestID: requestID, start: start, adm: adm, tk: tk,
		stream: stream, wantsUsage: wantsUsage, wantsChunks: wantsChunks, promptEstimate: promptEstimate(req),
		body: received, iolog: g.iolog.enabled(p.tenant.ID),
	}
	mt.relay(ctx, w, resp)
}

// setDownstreamHeaders removes the caller's credentials and sets the headers the gateway owns:
// the request id, the tenant's fairness id, and the inference objective of the key's policy (or
// none), so a caller cannot choose its own priority.
func (g *Gateway) setDownstreamHeaders(h http.Header, p *principal, requestID string) {
	h.Del("Authorization")
	h.Del(HeaderAPIKey)
	h.Del(openai.HeaderObjective)
	h.Set(openai.HeaderRequestID, requestID)
	h.Set(openai.HeaderFairnessID, p.fairnessID)
	if p.policy.objective != "" {
		h.Set(openai.HeaderObjective, p.policy.objective)
	}
}

// nOf is the number of choices a request asks for (n, default 1).
func nOf(req *openai.InferenceRequest) int64 {
	if req.N != nil && *req.N > 1 {
		return int64(*req.N)
	}
	return 1
}

// answerTransportError answers a failure of the next layer's RoundTrip, which never reached an
// engine: the client's own cancellation or deadline as AsError maps it, anything else 502.
func (g *Gateway) answerTransportError(ctx context.Context, w http.ResponseWriter, err error) {
	if ctx.Err() != nil {
		openai.WriteError(w, ctx.Err())
		return
	}
	g.log.WarnContext(ctx, "gateway: next layer failed", "err", err)
	openai.WriteError(w, openai.ErrUpstream)
}

// estimateTokens is the token charge of a request at admission: the prompt estimate plus the
// requested output (max_completion_tokens or max_tokens, times n), or DefaultOutputEstimate when
// the request sets no limit. strict reports that the estimate is the caller's own (an explicit
// limit), so a request above the TPM limit is refused rather than capped.
func estimateTokens(path string, req *openai.InferenceRequest) (int64, bool) {
	prompt := promptEstimate(req)
	if path == openai.PathEmbeddings {
		return prompt, true
	}
	n := int64(1)
	if req.N != nil && *req.N > 1 {
		n = int64(*req.N)
	}
	if limit, ok := req.OutputLimit(); ok {
		return satAdd(prompt, satMul(int64(limit), n)), true
	}
	return satAdd(prompt, satMul(DefaultOutputEstimate, n)), false
}

// satMul and satAdd are * and + on non-negative int64s, saturating at math.MaxInt64: a huge
// max_tokens times n must not wrap around to a small (or negative) charge.
func satMul(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// promptEstimate is the prompt's size in tokens estimated as bytes/4, the usual rule of thumb for
// English BPE tokenizers (OpenAI, "What are tokens and how to count them"); rounded up.
func promptEstimate(req *openai.InferenceRequest) int64 {
	return (int64(len(req.PromptText())) + 3) / 4
}

// requestIDOf returns the request's X-Request-Id, or a new UUID when it is absent, longer than
// 128 bytes or not visible ASCII (it is stored and logged, so it must be bounded and printable).
func requestIDOf(h http.Header) string {
	id := h.Get(openai.HeaderRequestID)
	if id == "" || len(id) > maxRequestIDLen {
		return uuid.NewString()
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return uuid.NewString()
		}
	}
	return id
}

// serveModels answers GET /v1/models (id "") with the next layer's list filtered by the tenant's
// allowlist, or GET /v1/models/{id} with one allowed model of that list (404 model_not_found
// otherwise, as for a model that does not exist).
func (g *Gateway) serveModels(w http.ResponseWriter, r *http.Request, id string) {
	ctx := r.Context()
	p, err := g.auth.authenticate(ctx, r.Header)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	requestID := requestIDOf(r.Header)
	w.Header().Set(openai.HeaderRequestID, requestID)
	out := openai.NewUpstreamRequest(r, nil, 0)
	out.URL.Path = openai.PathModels
	out.URL.RawPath = ""
	g.setDownstreamHeaders(out.Header, p, requestID)
	resp, err := g.next.RoundTrip(out)
	if err != nil {
		g.answerTransportError(ctx, w, err)
		return
	}
	resp.Header.Del(openai.HeaderEndpointServed)
	if resp.StatusCode != http.StatusOK || (id == "" && p.policy.models == nil) {
		if err := openai.Relay(w, resp); err != nil {
			g.log.DebugContext(ctx, "gateway: relaying the model list was cut", "err", err)
		}
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.answerTransportError(ctx, w, err)
		return
	}
	list, err := filterModels(b, &p.policy)
	if err != nil {
		g.log.WarnContext(ctx, "gateway: the next layer's model list is not a list", "err", err)
		openai.WriteError(w, openai.ErrUpstream)
		return
	}
	if id != "" {
		list, err = findModel(list, id)
		if err != nil {
			openai.WriteError(w, err)
			return
		}
	}
	openai.CopyHeaders(w.Header(), resp.Header)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(list)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(list)
}

// filterModels keeps the entries of a model list body ({"object":"list","data":[...]}) that
// the tenant may use. Other fields of the list and of each entry pass through unchanged.
func filterModels(body []byte, p *policy) ([]byte, error) {
	var list map[string]json.RawMessage
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	var data []json.RawMessage
	if err := json.Unmarshal(list["data"], &data); err != nil {
		return nil, err
	}
	kept := make([]json.RawMessage, 0, len(data))
	for _, m := range data {
		var e struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m, &e) == nil && p.allows(e.ID) {
			kept = append(kept, m)
		}
	}
	list["data"], _ = json.Marshal(kept)
	return json.Marshal(list)
}

// findModel returns the entry of id in a (filtered) model list, or ModelNotFound.
func findModel(list []byte, id string) ([]byte, error) {
	var v struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(list, &v); err != nil {
		return nil, err
	}
	for _, m := range v.Data {
		var e struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m, &e) == nil && e.ID == id {
			return m, nil
		}
	}
	return nil, openai.ModelNotFound(id)
}
