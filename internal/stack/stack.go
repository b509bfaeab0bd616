// Package stack composes Strata's layers for one process: the only place where platform,
// gateway, router and engine meet. In one process the layers are chained in memory (each
// layer's next is the handler below wrapped as an http.RoundTripper); across processes the
// lowest layer here reaches --upstream over HTTP (../shared/ARCHITECTURE.md).
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/gateway"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/platform"
	"github.com/strata-inference/strata/internal/router"
	"github.com/strata-inference/strata/internal/store"
	"github.com/strata-inference/strata/internal/telemetry"
)

// DevKeyEnv names the environment variable whose value, when set on first start, becomes the
// development tenant's API key.
const DevKeyEnv = "STRATA_DEV_API_KEY"

// Stack is the running set of layers of one process.
type Stack struct {
	cfg      *config.Config
	log      *slog.Logger
	registry *prometheus.Registry
	handler  http.Handler
	store    *store.Store
	router   *router.Router
	gateway  *gateway.Gateway
	platform *platform.Platform
	admin    http.Handler // the gateway's /admin/v1 API

	// DevKey is the development tenant's API key when this start created it, else "".
	DevKey string
	// Replicas lists the simulated replicas started by this stack.
	Replicas []config.Engine

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	servers []*http.Server
	sims    []*sim.Server
}

// New builds the layers of cfg.Layers bottom-up and starts their background work (simulated
// replicas on loopback listeners, router health checks and scrapes). Call Close to stop.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (st *Stack, err error) {
	clk := clock.RealClock{}
	s := &Stack{cfg: cfg, log: log, registry: telemetry.NewRegistry()}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	transport := newHTTPTransport()

	engines := cfg.Engines
	if cfg.Has(config.LayerEngine) {
		if engines, err = s.startSims(clk); err != nil {
			return nil, err
		}
	}

	var next http.RoundTripper
	var top http.Handler
	if cfg.Has(config.LayerRouter) {
		r, err := router.New(cfg.Router, engines, transport, clk, s.registry, log.With("layer", "router"))
		if err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
		s.router = r
		s.wg.Add(1)
		go func() { defer s.wg.Done(); r.Run(bg) }()
		stopKV := startKVEventFeeds(bg, engines, r, s.registry, log.With("layer", "router"))
		s.wg.Add(1)
		go func() { defer s.wg.Done(); <-bg.Done(); stopKV() }()
		top = r
	} else if cfg.Upstream != "" {
		u, err := url.Parse(cfg.Upstream)
		if err != nil {
			return nil, fmt.Errorf("upstream: %w", err)
		}
		next = upstreamTransport{base: u, rt: transport}
	}
	link := func(h http.Handler, layer string) {
		next = handlerTransport{h: h, log: log.With("layer", layer)}
		top = h
	}
	if top != nil {
		link(top, config.LayerRouter)
	}

	if cfg.Has(config.LayerGateway) || cfg.Has(config.LayerPlatform) {
		if s.store, err = store.Open(ctx, cfg.Store); err != nil {
			return nil, err
		}
	}
	if cfg.Has(config.LayerGateway) {
		secret, err := gateway.LoadOrCreateSecret(cfg.Gateway.KeySecretFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		if err := s.ensureDevTenant(ctx, secret); err != nil {
			return nil, err
		}
		g, err := gateway.New(cfg.Gateway, s.store, secret, next, clk, s.registry, log.With("layer", "gateway"))
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		s.gateway = g
		s.wg.Add(1)
		go func() { defer s.wg.Done(); g.RunIOLogPurge(bg) }()
		s.admin = g.AdminHandler()
		link(g, config.LayerGateway)
	}
	if cfg.Has(config.LayerPlatform) {
		p, err := platform.New(cfg.Platform, s.store, next, clk, s.registry, log.With("layer", "platform"))
		if err != nil {
			return nil, fmt.Errorf("platform: %w", err)
		}
		s.platform = p
		link(p, config.LayerPlatform)
	}
	if top == nil {
		return nil, errors.New("stack: the engine layer alone is served by `strata sim`")
	}
	s.handler = s.frontDoor(top)
	return s, nil
}

func (s *Stack) startSims(clk clock.Clock) (engines []config.Engine, err error) {
	for i := range s.cfg.Sim.Replicas {
		name := fmt.Sprintf("sim-%d", i)
		rc := s.cfg.Sim // each replica's KV-event sockets on its own port, as vLLM offsets per rank
		if rc.KVEventsEndpoint, err = sim.OffsetEndpointPort(rc.KVEventsEndpoint, i); err == nil {
			rc.KVEventsReplayEndpoint, err = sim.OffsetEndpointPort(rc.KVEventsReplayEndpoint, i)
		}
		rc.KVTransferPort = s.cfg.Sim.KVTransferPort + i
		if err != nil {
			return nil, fmt.Errorf("engine %s: %w", name, err)
		}
		srv, err := sim.New(rc, name, clk, prometheus.NewRegistry())
		if err != nil {
			return nil, fmt.Errorf("engine %s: %w", name, err)
		}
		s.sims = append(s.sims, srv)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("engine %s: %w", name, err)
		}
		base := "http://" + ln.Addr().String()
		s.serve(ln, srv)
		s.log.Info("listening", "serves", "simulated vLLM replica", "replica", name, "url", base,
			"model", s.cfg.Sim.ServedModelName, "gpu", s.cfg.Sim.GPU)
		engines = append(engines, config.Engine{Name: name, URL: base, Models: []string{s.cfg.Sim.ServedModelName},
			GPU: s.cfg.Sim.GPU, KVEvents: srv.KVEventsEndpoint()})
	}
	s.Replicas = engines
	return engines, nil
}

func (s *Stack) ensureDevTenant(ctx context.Context, secret []byte) error {
	if s.cfg.Gateway.DevTenant == nil || *s.cfg.Gateway.DevTenant == "" {
		return nil
	}
	rpm, tpm := 0, 0
	if v := s.cfg.Gateway.DevRPM; v != nil {
		rpm = *v
	}
	if v := s.cfg.Gateway.DevTPM; v != nil {
		tpm = *v
	}
	key, created, err := gateway.NewAdmin(s.store, secret).EnsureDevTenant(ctx, *s.cfg.Gateway.DevTenant, rpm, tpm, os.Getenv(DevKeyEnv))
	if err != nil {
		return fmt.Errorf("gateway: development tenant: %w", err)
	}
	if created {
		s.DevKey = key
	}
	return nil
}

// Handler is the front door: the top layer behind request-id, body-limit and header hygiene,
// plus /health and /metrics.
func (s *Stack) Handler() http.Handler { return s.handler }

// Registry is the process's Prometheus registry, served at /metrics.
func (s *Stack) Registry() *prometheus.Registry { return s.registry }

// Serve answers on ln with the front door until Close; it logs one line saying what serves where.
func (s *Stack) Serve(ln net.Listener) {
	s.log.Info("listening", "serves", "OpenAI API ("+strings.Join(s.cfg.Layers, " -> ")+")",
		"url", "http://"+ln.Addr().String(), "metrics", "http://"+ln.Addr().String()+"/metrics")
	s.serve(ln, s.handler)
}

func (s *Stack) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.servers = append(s.servers, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// Close drains the listeners (in-flight requests get up to 10 s to finish), stops background
// work and closes the database.
func (s *Stack) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Front door first (it was started last), so in-flight requests drain while the replicas
	// still answer; the router's loops stop before the replicas go, so it logs no false outage.
	for i := len(s.servers) - 1; i >= len(s.sims); i-- {
		_ = s.servers[i].Shutdown(ctx)
	}
	if s.platform != nil {
		s.platform.Close() // background responses record their cancellation before the store closes
	}
	if s.cancel != nil {
		s.cancel()
	}
	for i := len(s.sims) - 1; i >= 0 && i < len(s.servers); i-- {
		_ = s.servers[i].Shutdown(ctx)
	}
	s.wg.Wait()
	for _, sm := range s.sims {
		sm.Close()
	}
	if s.gateway != nil {
		_ = s.gateway.Close()
	}
	if s.store != nil {
		_ = s.store.Close()
	}
}

// frontDoor wraps the top layer: it assigns or checks X-Request-Id and echoes it, limits the body
// to cfg.MaxBodyBytes, drops the cross-layer headers that a layer of this process sets itself
// (a client must not forge them), and answers /health and /metrics.
func (s *Stack) frontDoor(top http.Handler) http.Handler {
	var drop []string
	if s.cfg.Has(config.LayerGateway) {
		drop = append(drop, openai.HeaderObjective, openai.HeaderFairnessID)
	}
	if s.cfg.Has(config.LayerPlatform) {
		drop = append(drop, openai.HeaderSession)
	}
	if s.cfg.Has(config.LayerRouter) {
		drop = append(drop, openai.HeaderEndpointServed)
	}
	metrics := telemetry.MetricsHandler(s.registry)
	limit := s.cfg.MaxBodyBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(openai.HeaderRequestID)
		if !validRequestID(id) {
			id = newRequestID()
			r.Header.Set(openai.HeaderRequestID, id)
		}
		w.Header().Set(openai.HeaderRequestID, id)
		switch r.URL.Path {
		case "/health":
			if s.router != nil && !s.router.Ready() {
				openai.WriteError(w, openai.ErrNoCapacity)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"ok"}`))
			return
		case "/metrics":
			metrics.ServeHTTP(w, r)
			return
		}
		for _, h := range drop {
			r.Header.Del(h)
		}
		if r.ContentLength > limit {
			openai.WriteError(w, openai.ErrBodyTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		if s.admin != nil && strings.HasPrefix(r.URL.Path, gateway.AdminPathPrefix) {
			s.admin.ServeHTTP(w, r)
			return
		}
		top.ServeHTTP(w, r)
	})
}
