package stack

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/vllm"
	"github.com/strata-inference/strata/internal/router"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// kvEventSink receives the KV events of one engine: the router (Router.HandleKVEvents, which
// forwards to every profile's scheduler) or, in tests, one scheduling.Scheduler.
type kvEventSink interface {
	HandleKVEvents(endpoint string, events []scheduling.KVEvent)
}

var (
	_ kvEventSink = (*router.Router)(nil)
	_ kvEventSink = (*scheduling.Scheduler)(nil)
)

// startKVEventFeeds subscribes to the KV-event publisher of every engine whose config sets
// kv_events (vLLM's --kv-events-config endpoint, ZMQ PUB, all topics) and hands each batch's
// events, converted by convertKVEvents, to sink under the engine's name, in the engine's order.
// Each feed reconnects on its own (zmq4) until stop, which cancels the feeds and waits for them.
// Malformed messages are skipped and logged once per engine; a gap in the sequence numbers (a
// message published before the subscription took effect, or dropped) is logged once per engine:
// the index may then miss blocks until the engine evicts or re-stores them.
//
// Metrics on reg (nil: none), labelled by engine: strata_router_kv_event_batches_total (batches
// handed to sink), strata_router_kv_events_total (events in them) and
// strata_router_kv_event_errors_total{what="malformed|gap"}.
func startKVEventFeeds(ctx context.Context, engines []config.Engine, sink kvEventSink, reg prometheus.Registerer, log *slog.Logger) (stop func()) {
	m := newKVFeedMetrics(reg)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, e := range engines {
		if e.KVEvents == "" {
			continue
		}
		wg.Go(func() {
			l := log.With("engine", e.Name, "kv_events", e.KVEvents)
			if err := runKVEventFeed(ctx, e.Name, e.KVEvents, sink, m, l); err != nil && ctx.Err() == nil {
				l.Warn("kv events: feed stopped", "err", err)
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// runKVEventFeed follows one engine's publisher until ctx is done.
func runKVEventFeed(ctx context.Context, name, endpoint string, sink kvEventSink, m *kvFeedMetrics, log *slog.Logger) error {
	sub := zmq4.NewSub(ctx, zmq4.WithDialerRetry(50*time.Millisecond), zmq4.WithDialerMaxRetries(-1),
		zmq4.WithAutomaticReconnect(true))
	defer func() { _ = sub.Close() }()
	// zmq4 sends a subscription to the connections that exist when it is set: dial first.
	if err := sub.Dial(endpoint); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	var (
		next             uint64
		started          bool
		warnedBad, gaped bool
	)
	for {
		msg, err := sub.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		b, err := vllm.DecodeMessage(msg.Frames)
		if err != nil {
			m.errors.WithLabelValues(name, "malformed").Inc()
			if !warnedBad {
				warnedBad = true
				log.Warn("kv events: malformed message skipped (further ones are not logged)", "err", err)
			}
			continue
		}
		if started && b.Seq < next {
			continue // a duplicate
		}
		if started && b.Seq > next || !started && b.Seq > 0 {
			m.errors.WithLabelValues(name, "gap").Inc()
			if !gaped {
				gaped = true
				log.Warn("kv events: batches missed (further gaps are not logged)", "expected_seq", next, "got_seq", b.Seq)
			}
		}
		started, next = true, b.Seq+1
		if evs := convertKVEvents(b.Events); len(evs) > 0 {
			sink.HandleKVEvents(name, evs)
			m.batches.WithLabelValues(name).Inc()
			m.events.WithLabelValues(name).Add(float64(len(evs)))
		}
	}
}

// convertKVEvents converts decoded vLLM events to the scheduler's model (contract C2): the
// medium defaults to GPU; an adapter known only by its deprecated lora_id gets the name
// "lora-id:<id>" so its blocks never match base-model requests; events of KV-cache groups other
// than 0 (hybrid models' sliding-window or mamba groups) are left out, since group 0's full
// attention blocks decide a prefix hit.
func convertKVEvents(in []vllm.Event) []scheduling.KVEvent {
	out := make([]scheduling.KVEvent, 0, len(in))
	for _, e := range in {
		if e.GroupIdx != 0 {
			continue
		}
		ev := scheduling.KVEvent{
			ParentHash: uint64(e.ParentBlockHash), HasParent: e.HasParent,
			TokenIDs: e.TokenIDs, BlockSize: e.BlockSize, LoRAName: e.LoRAName, Medium: e.Medium,
		}
		switch e.Type {
		case vllm.BlockStored:
			ev.Kind = scheduling.BlockStored
		case vllm.BlockRemoved:
			ev.Kind = scheduling.BlockRemoved
		case vllm.AllBlocksCleared:
			ev.Kind = scheduling.AllBlocksCleared
		default:
			continue
		}
		if ev.Medium == "" {
			ev.Medium = scheduling.MediumGPU
		}
		if ev.LoRAName == "" && e.LoRAID != 0 {
			ev.LoRAName = fmt.Sprintf("lora-id:%d", e.LoRAID)
		}
		ev.BlockHashes = make([]uint64, len(e.BlockHashes))
		for i, h := range e.BlockHashes {
			ev.BlockHashes[i] = uint64(h)
		}
		out = append(out, ev)
	}
	return out
}

type kvFeedMetrics struct {
	batches, events, errors *prometheus.CounterVec
}

func newKVFeedMetrics(reg prometheus.Registerer) *kvFeedMetrics {
	m := &kvFeedMetrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_router_kv_event_batches_total",
			Help: "KV-event batches received from an engine and handed to the scheduler."}, []string{"engine"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_router_kv_events_total",
			Help: "KV events (BlockStored, BlockRemoved, AllBlocksCleared) handed to the scheduler."}, []string{"engine"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_router_kv_event_errors_total",
			Help: "KV-event messages skipped as malformed (what=malformed) or sequence gaps (what=gap)."}, []string{"engine", "what"}),
	}
	if reg != nil {
		reg.MustRegister(m.batches, m.events, m.errors)
	}
	return m
}
