package sim

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

// maxBodyBytes bounds a request body read by the simulator (the stack's front door limits it
// further).
const maxBodyBytes = 32 << 20

// Server is one simulated vLLM replica: vLLM's OpenAI-compatible HTTP surface over a simulated
// engine core (continuous batching, paged KV cache with prefix caching, roofline step timing)
// advanced by the injected clock. It serves
//
//	POST /v1/chat/completions, POST /v1/completions   (stream and non-stream)
//	GET  /v1/models, GET /health, GET /metrics, POST /tokenize, POST /detokenize
//	POST /v1/embeddings, POST /reset_prefix_cache
//
// in vLLM's wire formats. A Server is safe for concurrent use; Close stops it.
type Server struct {
	cfg     config.Sim
	name    string
	clk     clock.Clock
	scale   float64
	tok     *tokenizerSet
	created int64

	registry *prometheus.Registry
	metrics  *vllmMetrics
	simStats *simMetrics
	// stepLag is strata_sim_step_lag_seconds; onLag, when set (tests), sees every sample with
	// the part of it the loop spent waking up (the rest is the lock and Complete).
	stepLag  prometheus.Histogram
	onLag    atomic.Pointer[func(lag, wake time.Duration)]
	metricsH http.Handler

	mu     sync.Mutex // guards eng, closed, adapters and nextLoRAID
	eng    *Engine
	closed bool
	// adapters are the loaded LoRA adapters by name; nextLoRAID is the last id handed out.
	adapters   map[string]*loraAdapter
	nextLoRAID int

	// kvPub publishes the core's KV events (nil when cfg.KVEventsEndpoint is empty); only the
	// step loop publishes, so sequence numbers follow the steps.
	kvPub *kvPublisher

	// faults injects the configured failures (cfg.Faults).
	faults *faults

	kick      chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New starts a simulated replica named name with the cfg.Model profile on a cfg.GPU profile,
// serving it as cfg.ServedModelName (default cfg.Model). clk drives
// every delay (a fake clock gives virtual time); every modelled delay is multiplied by
// *cfg.TimeScale (nil means 1; 0 answers without waiting). The replica's vLLM metrics live on
// its own registry, served at /metrics; Strata's strata_engine_sim_* metrics of the step loop
// are registered on reg (may be nil) with the label replica=name.
//
// Errors: an unknown model or GPU profile, an invalid cache shape (a KV cache that cannot hold
// one max_model_len request), or a metric registration conflict on reg.
func New(cfg config.Sim, name string, clk clock.Clock, reg prometheus.Registerer) (*Server, error) {
	if clk == nil {
		return nil, errors.New("sim: nil clock")
	}
	if _, err := LookupGPU(cfg.GPU); err != nil {
		return nil, err
	}
	model, err := LookupModel(cfg.Model)
	if err != nil {
		return nil, err
	}
	if cfg.ServedModelName == "" {
		cfg.ServedModelName = cfg.Model
	}
	switch {
	case cfg.BlockSize < 1:
		return nil, fmt.Errorf("sim: block_size must be positive, got %d", cfg.BlockSize)
	case cfg.MaxModelLen < 2:
		return nil, fmt.Errorf("sim: max_model_len must be at least 2, got %d", cfg.MaxModelLen)
	case cfg.MaxNumSeqs < 1:
		return nil, fmt.Errorf("sim: max_num_seqs must be positive, got %d", cfg.MaxNumSeqs)
	case cfg.MaxOutputTokens < 1:
		return nil, fmt.Errorf("sim: max_output_tokens must be positive, got %d", cfg.MaxOutputTokens)
	case cfg.TimeScale != nil && *cfg.TimeScale < 0:
		return nil, fmt.Errorf("sim: time_scale must not be negative, got %g", *cfg.TimeScale)
	case !validFraction(cfg.Faults.ErrorRate) || !validFraction(cfg.Faults.ResetRate) || !validFraction(cfg.Faults.HangRate):
		return nil, fmt.Errorf("sim: fault rates must be in [0, 1], got error %g, reset %g, hang %g",
			cfg.Faults.ErrorRate, cfg.Faults.ResetRate, cfg.Faults.HangRate)
	case cfg.Faults.ResetAfter < 0 || cfg.Faults.ColdStart < 0:
		return nil, fmt.Errorf("sim: faults.reset_after and faults.cold_start must not be negative, got %d and %s",
			cfg.Faults.ResetAfter, cfg.Faults.ColdStart.D())
	}
	eng, err := NewEngine(cfg, name)
	if err != nil {
		return nil, err
	}
	util := DefaultGPUMemoryUtilization
	if cfg.GPUMemoryUtilization != nil {
		util = *cfg.GPUMemoryUtilization
	}
	cfg.NumGPUBlocks = eng.totals.NumGPUBlocks
	tok, err := loadTokenizerFor(model)
	if err != nil {
		return nil, err
	}
	simStats, err := newSimMetrics(reg, name)
	if err != nil {
		return nil, fmt.Errorf("sim: register metrics: %w", err)
	}
	scale := 1.0
	if cfg.TimeScale != nil {
		scale = *cfg.TimeScale
	}
	registry := prometheus.NewRegistry()
	s := &Server{
		cfg: cfg, name: name, clk: clk, scale: scale, tok: tok, created: clk.Now().Unix(),
		registry: registry,
		metrics: newVLLMMetrics(registry, cfg.ServedModelName, cfg.MaxModelLen, cacheConfigInfo(cfg.BlockSize, cfg.NumGPUBlocks, util),
			max(1, cfg.MaxLoras)),
		simStats: simStats,
		stepLag:  newStepLagHistogram(registry),
		metricsH: promhttp.HandlerFor(registry, promhttp.HandlerOpts{}),
		eng:      eng,
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		adapters: map[string]*loraAdapter{},
		faults:   newFaults(cfg.Faults, cfg.Seed, name, clk.Now()),
	}
	eng.scale = scale
	eng.EnableKVEvents(cfg.KVEventsEndpoint != "")
	if cfg.KVEventsEndpoint != "" {
		if s.kvPub, err = newKVPublisher(cfg); err != nil {
			return nil, err
		}
	}
	s.wg.Add(1)
	go s.run()
	return s, nil
}

// KVEventsEndpoint is the bound address of the KV-event PUB socket ("tcp://127.0.0.1:40123"),
// or "" when events are off. With port 0 in the config it tells the port picked.
func (s *Server) KVEventsEndpoint() string {
	if s.kvPub == nil {
		return ""
	}
	return s.kvPub.endpoint()
}

// KVEventsReplayEndpoint is the bound address of the replay ROUTER socket, or "".
func (s *Server) KVEventsReplayEndpoint() string {
	if s.kvPub == nil {
		return ""
	}
	return s.kvPub.replayEndpoint()
}

// CachedBlockHashes returns the replica's prefix cache as KV events describe it: each cached
// block hash in its published form (BlockHash.Uint64) with the number of blocks cached under it
// (2 when the same block was computed twice). Tests compare it with what a subscriber rebuilt.
func (s *Server) CachedBlockHashes() map[uint64]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64]int)
	for h, n := range s.eng.kv.cachedHashes() {
		out[h.Uint64()] += n
	}
	return out
}

// KVEventsPublished is the number of KV-event batches published so far (the next sequence
// number), 0 when events are off.
func (s *Server) KVEventsPublished() uint64 {
	if s.kvPub == nil {
		return 0
	}
	s.kvPub.mu.Lock()
	defer s.kvPub.mu.Unlock()
	return s.kvPub.seq
}

// ResetPrefixCache drops every cached block, as vLLM's reset_prefix_cache, publishing
// AllBlocksCleared. It returns false, changing nothing, while requests hold blocks.
func (s *Server) ResetPrefixCache() bool {
	s.mu.Lock()
	ok := s.eng.ResetPrefixCache()
	s.mu.Unlock()
	s.wake() // the step loop publishes the event
	return ok
}

// publishKVEvents sends the events of the core's log as one batch. Called by the step loop
// only, without s.mu.
func (s *Server) publishKVEvents(events []KVEvent, at time.Time) {
	if len(events) == 0 {
		return
	}
	if err := s.kvPub.publish(kvNow(at), events); err != nil {
		s.simStats.kvPublishErrors.Inc()
	}
}

// Close stops the step loop and fails the requests still in the engine (their clients get a
// 503, or an error event when streaming). It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.wg.Wait()
		s.mu.Lock()
		s.closed = true
		s.eng.failAll(errEngineClosed)
		s.mu.Unlock()
		if s.kvPub != nil {
			s.kvPub.close()
		}
	})
}

// Registry is the replica's own Prometheus registry, the one /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// run is the step loop: schedule a step, wait until its modelled end on the clock, complete it.
// Steps follow each other on the clock's timeline: a busy engine starts a step at the previous
// one's end, not when the loop happened to wake up, so goroutine wake-up jitter does not make
// it fall behind its clock; how late each step really ends is strata_sim_step_lag_seconds.
func (s *Server) run() {
	defer s.wg.Done()
	var cursor time.Time
	busy := false
	for {
		s.mu.Lock()
		start := s.clk.Now()
		if busy && cursor.Before(start) {
			start = cursor
		}
		st, ok := s.eng.Schedule(start)
		s.recordLocked()
		// The step's events are only read here, before the next Schedule reuses them.
		events := st.KVEvents
		if !ok {
			wake, hasWake := s.eng.NextWake()
			s.mu.Unlock()
			s.publishKVEvents(events, start)
			busy = false
			var t clock.Timer
			var timer <-chan time.Time
			if hasWake {
				t = s.clk.NewTimer(max(0, wake.Sub(s.clk.Now())))
				timer = t.C()
			}
			select {
			case <-s.kick:
			case <-timer:
				// A transfer completed or held blocks came free: the next step starts then, on
				// the clock's timeline, however late the loop woke up.
				cursor, busy = wake, true
			case <-s.done:
				if t != nil {
					t.Stop()
				}
				return
			}
			if t != nil {
				t.Stop()
			}
			continue
		}
		deadline := st.End
		modelled := s.eng.plan.duration
		s.mu.Unlock()
		// vLLM's scheduler publishes the events of a step when it schedules it.
		s.publishKVEvents(events, start)

		s.simStats.steps.Inc()
		s.simStats.stepTime.Observe(modelled.Seconds())
		if wait := deadline.Sub(s.clk.Now()); wait > 0 {
			t := s.clk.NewTimer(wait)
			select {
			case <-t.C():
			case <-s.done:
				t.Stop()
				return
			}
		}
		wake := max(0, s.clk.Since(deadline))
		if s.scale > 0 {
			s.simStats.lag.Observe(wake.Seconds())
		}
		s.mu.Lock()
		st = s.eng.Complete()
		s.recordLocked()
		n := len(events)
		events = st.KVEvents[n:] // none in practice: completion frees, it never evicts
		s.mu.Unlock()
		if s.scale > 0 {
			lag := max(0, s.clk.Since(deadline))
			s.stepLag.Observe(lag.Seconds())
			if f := s.onLag.Load(); f != nil {
				(*f)(lag, wake)
			}
		}
		s.publishKVEvents(events, deadline)
		cursor, busy = deadline, true
	}
}

// recordLocked moves the engine's statistics into the metrics. s.mu is held.
func (s *Server) recordLocked() {
	st := &s.eng.stats
	s.metrics.record(st, len(s.eng.running), len(s.eng.waiting), s.eng.kv.usage())
	run, wait := s.eng.loraInfo()
	s.metrics.setLoRAInfo(run, wait, s.clk.Now())
	st.reset()
}

func (s *Server) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// submit queues seqs in the engine.
func (s *Server) submit(seqs []*sequence) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errEngineClosed
	}
	now := s.clk.Now()
	for _, q := range seqs {
		s.eng.add(q, now)
	}
	s.metrics.waiting.Set(float64(len(s.eng.waiting)))
	s.wake()
	return nil
}

// abort drops seqs whose client went away.
func (s *Server) abort(seqs []*sequence) {
	s.mu.Lock()
	for _, q := range seqs {
		s.eng.abort(q)
	}
	s.mu.Unlock()
	s.wake()
}

// ServeHTTP serves vLLM's OpenAI-compatible API. Errors are vLLM's ErrorResponse JSON.
//
// With cfg.Faults set it first injects the configured faults: 503 during the cold start, an
// error JSON, a hang until the client goes away, or a stream cut after cfg.Faults.ResetAfter
// events by panic(http.ErrAbortHandler), which net/http turns into an aborted connection.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var rw *resetWriter
	defer func() {
		if v := recover(); v != nil {
			// Never a panic to the client; the detail-free 500 is all it sees.
			openai.WriteError(w, fmt.Errorf("sim: panic: %v", v))
			return
		}
		if rw != nil && rw.dropped {
			s.simStats.faults.WithLabelValues("reset").Inc()
			panic(http.ErrAbortHandler)
		}
	}()
	var handled bool
	if w, rw, handled = s.serveFaults(w, r); handled {
		return
	}
	route := func(method string, h func(http.ResponseWriter, *http.Request)) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			openai.WriteError(w, errMethod)
			return
		}
		h(w, r)
	}
	switch r.URL.Path {
	case openai.PathChatCompletions:
		route(http.MethodPost, s.handleChat)
	case openai.PathCompletions:
		route(http.MethodPost, s.handleCompletions)
	case openai.PathModels:
		route(http.MethodGet, s.handleModels)
	case "/health":
		route(http.MethodGet, s.handleHealth)
	case "/metrics":
		route(http.MethodGet, s.metricsH.ServeHTTP)
	case "/tokenize":
		route(http.MethodPost, s.handleTokenize)
	case openai.PathEmbeddings:
		route(http.MethodPost, s.handleEmbeddings)
	case "/detokenize":
		route(http.MethodPost, s.handleDetokenize)
	case "/v1/load_lora_adapter":
		route(http.MethodPost, s.handleLoadLoRA)
	case "/v1/unload_lora_adapter":
		route(http.MethodPost, s.handleUnloadLoRA)
	case "/reset_prefix_cache":
		route(http.MethodPost, s.handleResetPrefixCache)
	default:
		openai.WriteError(w, errNotFound)
	}
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// handleResetPrefixCache is vLLM's POST /reset_prefix_cache (a development endpoint): 200 with
// an empty body once the prefix cache is cleared. vLLM answers 200 even when it could not clear
// it (blocks in use); the simulator answers 409 then, so tests never mistake it for success.
func (s *Server) handleResetPrefixCache(w http.ResponseWriter, _ *http.Request) {
	if !s.ResetPrefixCache() {
		openai.WriteError(w, vllmError(http.StatusConflict, "ConflictError", "", "The prefix cache cannot be reset while requests hold KV blocks."))
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, modelList{Object: "list", Data: append([]modelCard{{
		ID: s.cfg.ServedModelName, Object: "model", Created: s.created, OwnedBy: "vllm", Root: s.cfg.Model,
		MaxModelLen: s.cfg.MaxModelLen,
		Permission: []modelPermission{{
			ID: "modelperm-" + randomID(), Object: "model_permission", Created: s.created,
			AllowSampling: true, AllowLogprobs: true, AllowView: true, Organization: "*",
		}},
	}}, s.adapterCards()...)})
}

// readRequest reads and decodes the body and checks the model, in vLLM's order: body
// validation first, then the model.
func (s *Server) readRequest(r *http.Request) (*genRequest, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		return nil, err
	}
	req, err := parseRequest(body)
	if err != nil {
		return nil, err
	}
	return req, nil
}

func (s *Server) checkModel(req *genRequest) error {
	_, err := s.adapterFor(req)
	return err
}

// checkLength applies vLLM's context-length checks (OpenAIServing._validate_input) and returns
// the output limit of a prompt of n tokens.
func (s *Server) checkLength(req *genRequest, n int) (int, error) {
	maxLen := s.cfg.MaxModelLen
	if n == 0 {
		return 0, errEmptyPrompt
	}
	if n >= maxLen {
		return 0, badRequest("input_tokens", "This model's maximum context length is %d tokens. However, your request has %d input tokens. Please reduce the length of the input messages.", maxLen, n)
	}
	if mt := req.maxTokens(); mt != nil {
		if n+*mt > maxLen {
			return 0, badRequest("max_tokens", "'max_tokens' or 'max_completion_tokens' is too large: %d. This model's maximum context length is %d tokens and your request has %d input tokens (%d > %d - %d).",
				*mt, maxLen, n, *mt, maxLen, n)
		}
		return *mt, nil
	}
	return min(s.cfg.MaxOutputTokens, maxLen-n), nil
}

// requestID is vLLM's base request id: the X-Request-Id header when present, else a random hex
// uuid (vllm/entrypoints/openai/engine/serving.py _base_request_id).
func requestID(r *http.Request) string {
	if id := r.Header.Get(openai.HeaderRequestID); id != "" {
		return id
	}
	return randomID()
}

func randomID() string {
	u := uuid.New()
	return strings.ReplaceAll(u.String(), "-", "")
}
