package router

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Flow control, after the Gateway API Inference Extension's flow controller
// (pkg/epp/flowcontrol) and InferenceObjective priorities:
//
//   - A request's priority comes from its objective (x-gateway-inference-objective) through
//     router.flow_control.objectives; absent or unknown objectives get default_priority (0).
//     Negative priorities are sheddable.
//   - The saturation detector (saturated below) says whether every candidate endpoint of a
//     request is saturated.
//   - Not saturated and nobody queued: the request is scheduled at once.
//   - A sheddable request never waits: scheduled at once when its candidates are not all
//     saturated, else refused with 429.
//   - Saturated, or others already queued (who keep their turn): the request waits in a bounded
//     queue (queue_capacity; full: 429), in bands by priority, highest first, round-robin across
//     fairness ids (x-gateway-inference-fairness-id) within a band, FIFO within one id. A request
//     waiting longer than ttl is answered 503; a client that goes away while queued is removed
//     without trace.
//   - The queue is dispatched whenever an endpoint may have freed: when a request finishes and
//     after every metrics scrape. Dispatching schedules a head request (so the endpoint's
//     in-flight count rises before the next head is considered); heads of a model whose
//     endpoints are all saturated wait, without holding back other models (see dispatch).
//
// Status codes follow GIE's director: rejected for capacity (queue full, or sheddable while
// saturated) is 429 (errutil.InferencePoolResourceExhausted), evicted by TTL is 503
// (errutil.ServiceUnavailable).

// Flow-control answers. They are distinct from the gateway's per-tenant rate limits
// (rate_limit_exceeded) so a client or the gateway can tell "you are over your quota" from
// "the model's replicas are saturated".
var (
	errShed = &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeRateLimit, Code: codePoolExhausted,
		Message: "Every replica of this model is saturated and the request's objective is sheddable; retry later."}
	errQueueFull = &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeRateLimit, Code: codePoolExhausted,
		Message: "Every replica of this model is saturated and the router's queue is full; retry later."}
	errQueueTTL = &openai.Error{Status: http.StatusServiceUnavailable, Type: openai.TypeUnavailable, Code: codeQueueTimeout,
		Message: "The request waited too long for a replica of this model; retry later."}
)

// Error codes of the flow-control answers: GIE's InferencePoolResourceExhausted, and its
// "request timed out in queue".
const (
	codePoolExhausted = "inference_pool_resource_exhausted"
	codeQueueTimeout  = "queue_timeout"
)

// Reasons of strata_router_flow_rejected_total.
const (
	rejectSheddable = "sheddable_saturated"
	rejectQueueFull = "queue_full"
	rejectTTL       = "ttl_expired"
)

// errSaturated: every candidate endpoint is saturated (returned by Router.decide when asked to
// check saturation).
var errSaturated = errors.New("every candidate endpoint is saturated")

// saturated reports whether e counts as saturated (GIE's utilization detector): stale metrics,
// a waiting queue at the threshold, KV cache usage at the threshold, or MaxConcurrency requests
// in flight from this router. The waiting queue adds requests in flight from this router that
// the last scrape does not show yet (in flight beyond running + waiting), so a burst between two
// scrapes does not all pass.
func saturated(e *scheduling.Endpoint, s config.Saturation) bool {
	if e.Stale {
		return true
	}
	unseen := max(0, e.InFlight-e.Metrics.Running-e.Metrics.Waiting)
	return e.Metrics.Waiting+unseen >= s.QueueDepthThreshold ||
		e.Metrics.KVCacheUsage >= s.KVCacheUtilThreshold ||
		(s.MaxConcurrency > 0 && e.InFlight >= s.MaxConcurrency)
}

// allSaturated reports whether every endpoint of eps that could serve req (healthy, serving the
// model, not excluded) is saturated. With no such endpoint it is false: the scheduler then gives
// the right error (404 or 503).
func allSaturated(req *scheduling.Request, eps []*scheduling.Endpoint, s config.Saturation) bool {
	any := false
	for _, e := range eps {
		if !e.Healthy || !e.Serves(req.Model) || slices.Contains(req.Exclude, e.Name) {
			continue
		}
		if !saturated(e, s) {
			return false
		}
		any = true
	}
	return any
}

// flowQueue holds the requests waiting for an unsaturated endpoint.
type flowQueue struct {
	r   *Router
	cfg config.FlowControl

	mu    sync.Mutex
	bands []*band // by priority, highest first
	n     int     // queued requests, all bands
}

// band is one priority level: its flows (one per fairness id) served round-robin.
type band struct {
	priority int
	label    string // strconv.Itoa(priority), the metric label
	flows    []*flow
	next     int // index in flows of the flow whose turn it is
}

// flow is the FIFO of one fairness id within a band.
type flow struct {
	id    string
	items []*queued
}

// queued is one waiting request. done is closed when it was dispatched (d or err set).
type queued struct {
	c        *call
	priority int
	fid      string
	at       time.Time
	done     chan struct{}
	d        *decision
	err      error
}

func newFlowQueue(r *Router, cfg config.FlowControl) *flowQueue {
	return &flowQueue{r: r, cfg: cfg}
}

// priority maps an objective to its priority.
func (f *flowQueue) priority(objective string) int {
	if p, ok := f.cfg.Objectives[objective]; ok && objective != "" {
		return p
	}
	return f.cfg.DefaultPriority
}

// admit returns c's scheduling decision, waiting in the queue while every candidate endpoint is
// saturated. Errors: errShed, errQueueFull, errQueueTTL, the context's error when the client
// went away, or the scheduler's own (no endpoint, model not found).
func (f *flowQueue) admit(ctx context.Context, c *call) (*decision, error) {
	prio := f.priority(c.sreq.Objective)
	if !f.cfg.Enabled {
		d, err := f.r.decide(c, prio < 0, reasonFirst)
		if errors.Is(err, errSaturated) {
			f.r.metrics.decisions.WithLabelValues(f.r.profiles.main.name, reasonSaturated).Inc()
			f.r.metrics.flowRejected.WithLabelValues(rejectSheddable).Inc()
			return nil, errShed
		}
		return d, err
	}
	f.mu.Lock()
	// Nobody waiting (or a sheddable request, which never waits): go now unless saturated.
	if f.n == 0 || prio < 0 {
		d, err := f.r.decide(c, true, reasonFirst)
		if !errors.Is(err, errSaturated) {
			f.mu.Unlock()
			return d, err
		}
	}
	f.r.metrics.decisions.WithLabelValues(f.r.profiles.main.name, reasonSaturated).Inc()
	switch {
	case prio < 0:
		f.mu.Unlock()
		f.r.metrics.flowRejected.WithLabelValues(rejectSheddable).Inc()
		return nil, errShed
	case f.n >= f.cfg.QueueCapacity:
		f.mu.Unlock()
		f.r.metrics.flowRejected.WithLabelValues(rejectQueueFull).Inc()
		return nil, errQueueFull
	}
	others := f.n > 0
	q := &queued{c: c, priority: prio, fid: c.sreq.FairnessID, at: f.r.clk.Now(), done: make(chan struct{})}
	f.push(q)
	if others {
		// Take turns with the waiting requests now, in priority order: q may go at once when its
		// model's endpoints have room (the waiting ones may be of another model).
		var saturatedModels map[string]bool
		for f.n > 0 && f.dispatchOne(&saturatedModels) {
		}
	}
	f.mu.Unlock()

	ttl := f.r.clk.NewTimer(f.cfg.TTL.D())
	defer ttl.Stop()
	select {
	case <-q.done:
		return q.d, q.err
	case <-ctx.Done():
		if f.remove(q) {
			return nil, ctx.Err()
		}
	case <-ttl.C():
		if f.remove(q) {
			f.r.metrics.flowRejected.WithLabelValues(rejectTTL).Inc()
			return nil, errQueueTTL
		}
	}
	// Dispatched while we were giving up: the decision stands (or is released by the caller on
	// a gone client).
	<-q.done
	if ctx.Err() != nil && q.d != nil {
		f.r.release(q.d)
		return nil, ctx.Err()
	}
	return q.d, q.err
}

// push appends q to its band and flow. f.mu is held.
func (f *flowQueue) push(q *queued) {
	i, found := slices.BinarySearchFunc(f.bands, q.priority, func(b *band, p int) int { return p - b.priority })
	if !found {
		f.bands = slices.Insert(f.bands, i, &band{priority: q.priority, label: strconv.Itoa(q.priority)})
	}
	b := f.bands[i]
	var fl *flow
	for _, x := range b.flows {
		if x.id == q.fid {
			fl = x
			break
		}
	}
	if fl == nil {
		fl = &flow{id: q.fid}
		b.flows = append(b.flows, fl)
	}
	fl.items = append(fl.items, q)
	f.n++
	f.r.metrics.flowQueueLength.WithLabelValues(b.label).Inc()
}

// remove takes q out of the queue and reports whether it was still there (not dispatched).
func (f *flowQueue) remove(q *queued) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for bi, b := range f.bands {
		if b.priority != q.priority {
			continue
		}
		for fi, fl := range b.flows {
			if fl.id != q.fid {
				continue
			}
			if j := slices.Index(fl.items, q); j >= 0 {
				fl.items = slices.Delete(fl.items, j, j+1)
				f.dropIfEmpty(bi, fi)
				f.n--
				f.r.metrics.flowQueueLength.WithLabelValues(b.label).Dec()
				return true
			}
		}
	}
	return false
}

// dropIfEmpty removes flow fi of band bi when it is empty, and the band when it has no flow left,
// keeping the band's round-robin position on the flow that came after the removed one.
func (f *flowQueue) dropIfEmpty(bi, fi int) {
	b := f.bands[bi]
	if len(b.flows[fi].items) > 0 {
		return
	}
	b.flows = slices.Delete(b.flows, fi, fi+1)
	if fi < b.next {
		b.next--
	}
	if b.next >= len(b.flows) {
		b.next = 0
	}
	if len(b.flows) == 0 {
		f.bands = slices.Delete(f.bands, bi, bi+1)
	}
}

// dispatch schedules queued requests while it can: the highest band first, and within a band the
// flows round-robin, each flow first in, first out. A flow whose head request finds every
// candidate saturated is skipped for this pass, and so is every later head of the same model
// (dispatching other models can only make it busier), so one saturated model does not hold back
// another's requests; priority and fairness hold among the requests of one model. It is called
// when an endpoint may have freed: a request finished, or a scrape refreshed an endpoint's
// metrics.
func (f *flowQueue) dispatch() {
	if f == nil || !f.cfg.Enabled {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var saturatedModels map[string]bool
	for f.n > 0 && f.dispatchOne(&saturatedModels) {
	}
}

// dispatchOne schedules the first dispatchable head in priority and round-robin order and
// reports whether there was one. f.mu is held.
func (f *flowQueue) dispatchOne(saturatedModels *map[string]bool) bool {
	for bi, b := range f.bands {
		for k := range b.flows {
			fi := (b.next + k) % len(b.flows)
			fl := b.flows[fi]
			q := fl.items[0]
			model := q.c.sreq.Model
			if (*saturatedModels)[model] {
				continue
			}
			d, err := f.r.decide(q.c, true, reasonQueued)
			if errors.Is(err, errSaturated) {
				if *saturatedModels == nil {
					*saturatedModels = map[string]bool{}
				}
				(*saturatedModels)[model] = true
				continue
			}
			fl.items = fl.items[1:]
			b.next = fi + 1
			if b.next >= len(b.flows) {
				b.next = 0
			}
			f.dropIfEmpty(bi, fi)
			f.n--
			f.r.metrics.flowQueueLength.WithLabelValues(b.label).Dec()
			f.r.metrics.flowWait.Observe(f.r.clk.Since(q.at).Seconds())
			q.d, q.err = d, err
			close(q.done)
			return true
		}
	}
	return false
}

// length returns the number of queued requests (for tests).
func (f *flowQueue) length() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// validateFlowControl checks flow-control settings given to New directly (config.Load validates
// the same through config.Router).
func validateFlowControl(fc *config.FlowControl) error {
	switch {
	case fc.QueueCapacity < 1:
		return fmt.Errorf("queue_capacity: must be at least 1, got %d", fc.QueueCapacity)
	case fc.TTL <= 0:
		return fmt.Errorf("ttl: must be positive, got %s", fc.TTL.D())
	case fc.Saturation.QueueDepthThreshold < 1:
		return fmt.Errorf("saturation.queue_depth_threshold: must be at least 1, got %d", fc.Saturation.QueueDepthThreshold)
	case !(fc.Saturation.KVCacheUtilThreshold > 0 && fc.Saturation.KVCacheUtilThreshold <= 1):
		return fmt.Errorf("saturation.kv_cache_util_threshold: must be in (0, 1], got %g", fc.Saturation.KVCacheUtilThreshold)
	case fc.Saturation.MaxConcurrency < 0:
		return fmt.Errorf("saturation.max_concurrency: must not be negative, got %d", fc.Saturation.MaxConcurrency)
	}
	return nil
}
