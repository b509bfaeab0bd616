package router

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// endpoint is one engine replica and the router's soft state about it: health, served models,
// the last scrape of its metrics, and the router's own in-flight accounting.
type endpoint struct {
	name   string
	base   *url.URL
	served string // value of openai.HeaderEndpointServed: "name" or "name;gpu=TYPE"
	role   string // config engines[].role: scheduling.RolePrefill, RoleDecode, RoleBoth or ""
	// configured: the models come from the config, so /v1/models is not polled.
	configured bool

	mu            sync.Mutex
	healthy       bool
	models        []string          // nil while to be discovered; replaced, never mutated
	modelObjs     []json.RawMessage // one per model: the engine's own object, or ours
	adapters      []string          // LoRA adapters: /v1/models entries with a parent; replaced, never mutated
	metrics       scheduling.Metrics
	scrapedAt     time.Time // zero: never scraped
	scrapeFailing bool      // for logging transitions only
	inFlight      int
	inFlightToks  int
}

func newEndpoint(e config.Engine, created int64) (*endpoint, error) {
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("engine %q: url %q is not an http(s) URL", e.Name, e.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	name := e.Name
	if name == "" {
		name = u.Host
	}
	ep := &endpoint{name: name, base: u, served: name, role: e.Role, configured: len(e.Models) > 0}
	switch e.Role {
	case "", scheduling.RolePrefill, scheduling.RoleDecode, scheduling.RoleBoth:
	default:
		return nil, fmt.Errorf("engine %q: role %q is not prefill, decode or both", name, e.Role)
	}
	if e.GPU != "" {
		ep.served = name + ";gpu=" + e.GPU
	}
	if len(e.Models) > 0 {
		objs := make([]json.RawMessage, len(e.Models))
		for i, m := range e.Models {
			objs[i], _ = json.Marshal(openai.Model{ID: m, Object: "model", Created: created, OwnedBy: "strata"})
		}
		ep.setModels(append([]string(nil), e.Models...), objs, nil)
	}
	return ep, nil
}

// url returns the endpoint's URL for path (which starts with "/").
func (e *endpoint) url(path string) string { return e.base.String() + path }

// setModels records the endpoint's models (their objects, one per id) and the LoRA adapters among
// them. The slices are owned by the endpoint from then on.
func (e *endpoint) setModels(ids []string, objs []json.RawMessage, adapters []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.models, e.modelObjs, e.adapters = ids, objs, adapters
}

// hostPort is the endpoint's host:port, as llm-d's x-prefiller-host-port header carries it (the
// scheme's default port when the URL has none).
func (e *endpoint) hostPort() string {
	if e.base.Port() != "" {
		return e.base.Host
	}
	port := "80"
	if e.base.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(e.base.Hostname(), port)
}

func (e *endpoint) modelsKnown() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.models != nil
}

// setHealthy records a health result and reports whether it changed.
func (e *endpoint) setHealthy(ok bool) (changed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed = e.healthy != ok
	e.healthy = ok
	return changed
}

func (e *endpoint) isHealthy() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.healthy
}

// setMetrics records a successful scrape at now and reports whether scrapes were failing before.
func (e *endpoint) setMetrics(m scheduling.Metrics, now time.Time) (recovered bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.metrics, e.scrapedAt = m, now
	recovered, e.scrapeFailing = e.scrapeFailing, false
	return recovered
}

// scrapeFailed reports whether this is the first failure after a success (or ever).
func (e *endpoint) scrapeFailed() (first bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	first, e.scrapeFailing = !e.scrapeFailing, true
	return first
}

// begin and end bracket one request sent to the endpoint.
func (e *endpoint) begin(tokens int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight++
	e.inFlightToks += tokens
}

func (e *endpoint) end(tokens int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight--
	e.inFlightToks -= tokens
}

// snapshot is the endpoint as the scheduler sees it at now.
func (e *endpoint) snapshot(now time.Time, staleAfter time.Duration, out *scheduling.Endpoint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	*out = scheduling.Endpoint{
		Name:           e.name,
		Models:         e.models,
		ModelsKnown:    e.models != nil,
		Healthy:        e.healthy,
		Metrics:        e.metrics,
		Stale:          e.scrapedAt.IsZero() || now.Sub(e.scrapedAt) > staleAfter,
		InFlight:       e.inFlight,
		InFlightTokens: e.inFlightToks,
		Role:           e.role,
		Adapters:       e.adapters,
	}
}
