package vllm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// BlockSet is one replica's prefix cache rebuilt from its KV events: each cached block hash
// with the number of cached blocks holding it. vLLM caches a block computed twice twice and
// publishes a BlockStored for each and a BlockRemoved for each eviction, so counting (not a
// plain set) keeps the set exact. Only GPU-medium events (or events without a medium) count:
// an offloaded copy on CPU is not a prefix hit on the GPU. A BlockSet is not safe for
// concurrent use; Subscriber guards its own.
type BlockSet struct {
	blocks map[BlockHash]int
}

// NewBlockSet returns an empty set.
func NewBlockSet() *BlockSet { return &BlockSet{blocks: make(map[BlockHash]int)} }

// Apply updates the set with one event. A BlockRemoved of an unknown hash is ignored (the
// subscriber joined after it was stored).
func (s *BlockSet) Apply(e Event) {
	if e.Medium != "" && e.Medium != "GPU" {
		return
	}
	switch e.Type {
	case BlockStored:
		for _, h := range e.BlockHashes {
			s.blocks[h]++
		}
	case BlockRemoved:
		for _, h := range e.BlockHashes {
			if n := s.blocks[h]; n > 1 {
				s.blocks[h] = n - 1
			} else {
				delete(s.blocks, h)
			}
		}
	case AllBlocksCleared:
		clear(s.blocks)
	}
}

// Contains reports whether a block with hash h is cached.
func (s *BlockSet) Contains(h BlockHash) bool { return s.blocks[h] > 0 }

// Len is the number of distinct cached hashes.
func (s *BlockSet) Len() int { return len(s.blocks) }

// Counts returns a copy of hash -> number of cached blocks.
func (s *BlockSet) Counts() map[BlockHash]int { return maps.Clone(s.blocks) }

// SubscriberConfig names one replica's KV-event sockets.
type SubscriberConfig struct {
	// Replica labels the subscriber's metrics and logs.
	Replica string
	// Endpoint is the replica's PUB socket ("tcp://10.0.0.5:5557").
	Endpoint string
	// ReplayEndpoint is its ROUTER replay socket; "" disables replay, so a gap (a message lost
	// or sent before the subscription took effect) is only counted.
	ReplayEndpoint string
	// Topic filters messages by prefix, as ZMQ subscriptions do ("" = all).
	Topic string
}

// Subscriber follows one replica's KV events and keeps its BlockSet. When a sequence number
// is skipped (ZMQ PUB drops messages sent before a subscriber joins, or past its high-water
// mark) and a replay endpoint is configured, it asks the replica's replay socket for the
// missing batches, as vLLM's documented subscriber does (examples/online_serving/
// kv_events_subscriber.py), and applies them in order before the current one.
type Subscriber struct {
	cfg     SubscriberConfig
	log     *slog.Logger
	metrics *subscriberMetrics

	mu      sync.Mutex
	set     *BlockSet
	nextSeq uint64
	started bool
	batches uint64
}

// NewSubscriber returns a subscriber for one replica; Run starts it. Its metrics go on reg
// (may be nil) with the label replica=cfg.Replica:
// strata_engine_vllm_kv_batches_total, strata_engine_vllm_kv_events_total,
// strata_engine_vllm_kv_decode_errors_total{what="message|event"},
// strata_engine_vllm_kv_sequence_gaps_total. Errors: an empty endpoint, or a metric
// registration conflict.
func NewSubscriber(cfg SubscriberConfig, reg prometheus.Registerer, log *slog.Logger) (*Subscriber, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("vllm: kv-event subscriber needs an endpoint")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newSubscriberMetrics(reg, cfg.Replica)
	if err != nil {
		return nil, fmt.Errorf("vllm: register metrics: %w", err)
	}
	return &Subscriber{cfg: cfg, log: log.With("replica", cfg.Replica), metrics: m, set: NewBlockSet()}, nil
}

// Run connects to the replica and applies its events until ctx is done; it returns ctx's error
// then, or the error of the first connection attempt. Reconnections are zmq4's.
func (s *Subscriber) Run(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub := zmq4.NewSub(sctx, zmq4.WithDialerRetry(50*time.Millisecond), zmq4.WithDialerMaxRetries(-1),
		zmq4.WithAutomaticReconnect(true))
	defer func() { _ = sub.Close() }()
	// zmq4 sends a subscription to the connections that exist when it is set: dial first.
	if err := sub.Dial(s.cfg.Endpoint); err != nil {
		return fmt.Errorf("vllm: dial kv events %s: %w", s.cfg.Endpoint, err)
	}
	if err := sub.SetOption(zmq4.OptionSubscribe, s.cfg.Topic); err != nil {
		return fmt.Errorf("vllm: subscribe: %w", err)
	}
	for {
		msg, err := sub.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.log.Warn("kv events: receive failed", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		s.HandleMessage(ctx, msg.Frames)
	}
}

// HandleMessage decodes and applies one multipart message, replaying a gap first when it can.
// Malformed messages are counted and skipped. Run calls it; it is exported for consumers that
// own the socket.
func (s *Subscriber) HandleMessage(ctx context.Context, frames [][]byte) {
	b, err := DecodeMessage(frames)
	if err != nil {
		s.metrics.messageErrors.Inc()
		return
	}
	s.mu.Lock()
	gap := b.Seq != s.nextSeq && (s.started || b.Seq > 0)
	from := s.nextSeq
	s.mu.Unlock()
	if gap && b.Seq > from {
		s.metrics.gaps.Inc()
		if s.cfg.ReplayEndpoint != "" {
			if err := s.replay(ctx, from, b.Seq); err != nil {
				s.log.Warn("kv events: replay failed", "from", from, "err", err)
			}
		}
	}
	s.apply(b)
}

// apply applies b unless it is older than what was already applied (a replayed duplicate).
func (s *Subscriber) apply(b Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started && b.Seq < s.nextSeq {
		return
	}
	for _, e := range b.Events {
		s.set.Apply(e)
	}
	s.started, s.nextSeq = true, b.Seq+1
	s.batches++
	s.metrics.batches.Inc()
	s.metrics.events.Add(float64(len(b.Events)))
	s.metrics.eventErrors.Add(float64(b.Skipped))
}

// replay asks the replay socket for batches from seq from, applying those before until.
func (s *Subscriber) replay(ctx context.Context, from, until uint64) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := zmq4.NewDealer(rctx, zmq4.WithID(zmq4.SocketIdentity(uuid.NewString())), zmq4.WithDialerMaxRetries(3))
	defer func() { _ = d.Close() }()
	if err := d.Dial(s.cfg.ReplayEndpoint); err != nil {
		return err
	}
	var start [8]byte
	binary.BigEndian.PutUint64(start[:], from)
	if err := d.SendMulti(zmq4.NewMsgFrom(nil, start[:])); err != nil {
		return err
	}
	for {
		msg, err := d.Recv()
		if err != nil {
			return err
		}
		// [empty delimiter, sequence, payload]; the end is sequence -1 with an empty payload.
		f := msg.Frames
		if len(f) == 3 && len(f[0]) == 0 {
			f = f[1:]
		}
		if len(f) != 2 || len(f[0]) != 8 {
			s.metrics.messageErrors.Inc()
			continue
		}
		seq := binary.BigEndian.Uint64(f[0])
		if seq == ^uint64(0) {
			return nil
		}
		if seq >= until {
			continue
		}
		b, err := DecodeMessage([][]byte{[]byte(s.cfg.Topic), f[0], f[1]})
		if err != nil {
			s.metrics.messageErrors.Inc()
			continue
		}
		s.apply(b)
	}
}

// Blocks returns a copy of the rebuilt prefix cache: hash -> number of cached blocks.
func (s *Subscriber) Blocks() map[BlockHash]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set.Counts()
}

// Contains reports whether the replica holds a cached block with hash h.
func (s *Subscriber) Contains(h BlockHash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set.Contains(h)
}

// NextSeq is the sequence number expected next (the number of batches seen when none were lost).
func (s *Subscriber) NextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq
}

type subscriberMetrics struct {
	batches, events, messageErrors, eventErrors, gaps prometheus.Counter
}

func newSubscriberMetrics(reg prometheus.Registerer, replica string) (*subscriberMetrics, error) {
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_engine_vllm_kv_decode_errors_total",
		Help: "KV-event messages (what=message) or single events (what=event) skipped as malformed or unknown."}, []string{"what"})
	m := &subscriberMetrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_engine_vllm_kv_batches_total",
			Help: "KV-event batches applied."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_engine_vllm_kv_events_total",
			Help: "KV events applied."}),
		messageErrors: errs.WithLabelValues("message"),
		eventErrors:   errs.WithLabelValues("event"),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_engine_vllm_kv_sequence_gaps_total",
			Help: "Times a KV-event sequence number was skipped (messages lost before replay)."}),
	}
	if reg == nil {
		return m, nil
	}
	r := prometheus.WrapRegistererWith(prometheus.Labels{"replica": replica}, reg)
	for _, c := range []prometheus.Collector{m.batches, m.events, errs, m.gaps} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
