package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// UsageEventType is the CloudEvents "type" of an exported usage record.
const UsageEventType = "io.strata.usage.v1"

// cloudEventsContentType is the structured-mode media type of one event over HTTP (CloudEvents
// HTTP Protocol Binding 1.0, section 3.1.1).
const cloudEventsContentType = "application/cloudevents+json; charset=utf-8"

// cloudEvent is one usage record as a CloudEvents 1.0 event in structured JSON mode (CloudEvents
// spec 1.0.2, "JSON Event Format"): the context attributes beside "data".
type cloudEvent struct {
	SpecVersion     string    `json:"specversion"`     // "1.0"
	ID              string    `json:"id"`              // the record's stored request id: the dedup key
	Source          string    `json:"source"`          // config export.source
	Type            string    `json:"type"`            // UsageEventType
	Subject         string    `json:"subject"`         // the tenant id
	Time            string    `json:"time"`            // RFC 3339, the record's created_at
	DataContentType string    `json:"datacontenttype"` // "application/json"
	Data            usageData `json:"data"`
}

// usageData is the "data" of a usage event: the ledger record with the units in the names.
type usageData struct {
	RequestID        string `json:"request_id"`
	TenantID         string `json:"tenant_id"`
	KeyID            string `json:"key_id"`
	Model            string `json:"model"`
	Adapter          string `json:"adapter"`
	Endpoint         string `json:"endpoint"`
	GPU              string `json:"gpu"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TTFTMillis       int64  `json:"ttft_ms"`
	DurationMillis   int64  `json:"duration_ms"`
	Status           int    `json:"status"`
	Stream           bool   `json:"stream"`
	UsageSource      string `json:"usage_source"`
	BilledReason     string `json:"billed_reason"`
}

// usageCloudEvent renders rec (as stored: RequestID is its ledger key) as a structured CloudEvent.
func usageCloudEvent(source string, rec *store.UsageRecord) ([]byte, error) {
	return json.Marshal(cloudEvent{SpecVersion: "1.0", ID: rec.RequestID, Source: source, Type: UsageEventType,
		Subject: rec.TenantID, Time: rec.CreatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), DataContentType: "application/json",
		Data: usageData{RequestID: rec.RequestID, TenantID: rec.TenantID, KeyID: rec.KeyID, Model: rec.Model, Adapter: rec.Adapter,
			Endpoint: rec.Endpoint, GPU: rec.GPU, PromptTokens: rec.PromptTokens, CachedTokens: rec.CachedTokens,
			CompletionTokens: rec.CompletionTokens, TTFTMillis: rec.TTFT.Milliseconds(), DurationMillis: rec.Duration.Milliseconds(),
			Status: rec.Status, Stream: rec.Stream, UsageSource: rec.Source, BilledReason: rec.BilledReason}})
}

// exporter delivers the usage events of the outbox (store.WriteUsageBatch fills it in the
// record's own transaction) at least once: to a webhook, one POST per event, or appended to an
// NDJSON file (one event per line, fsynced before the events are deleted). A failed delivery is
// retried after initial_backoff, doubling up to max_backoff; after max_attempts the event is
// dead-lettered (kept in usage_outbox with dead_at set). Consumers deduplicate on the event id.
// A nil *exporter exports nothing.
//
// Metrics: strata_gateway_export_delivered_total, strata_gateway_export_failures_total (failed
// attempts), strata_gateway_export_dead_letters_total.
type exporter struct {
	st     *store.Store
	cfg    config.Export
	clk    clock.Clock
	log    *slog.Logger
	client *http.Client

	delivered   prometheus.Counter
	failures    prometheus.Counter
	deadLetters prometheus.Counter

	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	file   *os.File // sink file
}

func newExporter(st *store.Store, cfg config.Export, clk clock.Clock, reg prometheus.Registerer, log *slog.Logger) (*exporter, error) {
	e := &exporter{st: st, cfg: cfg, clk: clk, log: log, client: &http.Client{Timeout: cfg.Timeout.D()},
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_export_delivered_total",
			Help: "Usage events delivered to the export sink."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_export_failures_total",
			Help: "Failed deliveries of usage events (each is retried with backoff until max_attempts)."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_export_dead_letters_total",
			Help: "Usage events dead-lettered after their last failed delivery (kept in the outbox)."}),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if e.cfg.Source == "" {
		e.cfg.Source = "/strata/gateway"
	}
	if e.cfg.BatchSize < 1 {
		e.cfg.BatchSize = 100
	}
	if e.cfg.MaxAttempts < 1 {
		e.cfg.MaxAttempts = 1
	}
	if e.cfg.PollInterval <= 0 {
		e.cfg.PollInterval = config.Duration(time.Second)
	}
	if cfg.Sink == config.ExportSinkFile {
		f, err := os.OpenFile(cfg.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("gateway: export file: %w", err)
		}
		e.file = f
	}
	for _, c := range []prometheus.Collector{e.delivered, e.failures, e.deadLetters} {
		if err := reg.Register(c); err != nil {
			if e.file != nil {
				e.file.Close()
			}
			return nil, err
		}
	}
	return e, nil
}

// event is the ledger's store.UsageEventFunc.
func (e *exporter) event(rec *store.UsageRecord) ([]byte, error) {
	return usageCloudEvent(e.cfg.Source, rec)
}

// notify wakes the delivery loop (after a commit that wrote events). Never blocks.
func (e *exporter) notify() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// start runs the delivery loop until Close.
func (e *exporter) start() {
	if e == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() {
		defer close(e.done)
		e.run(ctx)
	}()
}

// Close stops the delivery loop (an attempt in flight is cancelled and retried at the next
// start) and closes the file sink. Safe on a nil receiver and to call twice.
func (e *exporter) Close() {
	if e == nil {
		return
	}
	e.once.Do(func() {
		if e.cancel != nil {
			e.cancel()
			<-e.done
		}
		if e.file != nil {
			_ = e.file.Close()
		}
	})
}

func (e *exporter) run(ctx context.Context) {
	t := e.clk.NewTimer(e.cfg.PollInterval.D())
	defer t.Stop()
	for {
		e.drain(ctx)
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-t.C():
		}
		if !t.Stop() {
			select {
			case <-t.C():
			default:
			}
		}
		t.Reset(e.cfg.PollInterval.D())
	}
}

// drain delivers due events until none is due or the store fails.
func (e *exporter) drain(ctx context.Context) {
	for ctx.Err() == nil {
		evs, err := e.st.DueUsageEvents(ctx, e.clk.Now(), e.cfg.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("gateway: reading the usage outbox failed", "err", err)
			}
			return
		}
		if len(evs) == 0 {
			return
		}
		errs := e.deliver(ctx, evs)
		if ctx.Err() != nil {
			return // stopping: the events stay due
		}
		var acked []string
		for i, ev := range evs {
			if errs[i] == nil {
				acked = append(acked, ev.ID)
				continue
			}
			if err := e.failed(ctx, ev, errs[i]); err != nil {
				e.log.Warn("gateway: recording a failed usage export failed", "id", ev.ID, "err", err)
				return
			}
		}
		if err := e.st.AckUsageEvents(ctx, acked); err != nil {
			e.log.Warn("gateway: deleting delivered usage events failed (they will be delivered again)", "err", err)
			return
		}
		e.delivered.Add(float64(len(acked)))
		if len(evs) < e.cfg.BatchSize {
			return
		}
	}
}

// failed counts a failed delivery of ev and schedules its next attempt, or dead-letters it.
func (e *exporter) failed(ctx context.Context, ev store.UsageEvent, cause error) error {
	// The outbox is updated before the counters move, so whoever reads a counter sees the row
	// in its new state.
	attempts := ev.Attempts + 1
	now := e.clk.Now()
	dead := attempts >= e.cfg.MaxAttempts
	next := now.Add(e.backoff(attempts))
	if dead {
		next = now
	}
	err := e.st.FailUsageEvent(ctx, ev.ID, attempts, cause.Error(), next, dead)
	e.failures.Inc()
	if dead {
		e.deadLetters.Inc()
		e.log.Error("gateway: usage event dead-lettered", "id", ev.ID, "attempts", attempts, "err", cause)
	}
	return err
}

// backoff is the wait after the n-th failed attempt: initial_backoff * 2^(n-1), at most
// max_backoff. No jitter: events are independent, retries of a batch are not synchronized with
// other gateways' in a way that matters for one webhook.
func (e *exporter) backoff(n int) time.Duration {
	d := e.cfg.InitialBackoff.D()
	for i := 1; i < n && d < e.cfg.MaxBackoff.D(); i++ {
		d *= 2
	}
	return min(d, e.cfg.MaxBackoff.D())
}

// deliver sends evs to the sink and returns one error per event (nil: delivered).
func (e *exporter) deliver(ctx context.Context, evs []store.UsageEvent) []error {
	errs := make([]error, len(evs))
	if e.file != nil {
		var b bytes.Buffer
		for _, ev := range evs {
			b.Write(ev.Payload)
			b.WriteByte('\n')
		}
		_, err := e.file.Write(b.Bytes())
		if err == nil {
			err = e.file.Sync()
		}
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for i, ev := range evs {
		errs[i] = e.post(ctx, ev.Payload)
	}
	return errs
}

// post delivers one event to the webhook; any 2xx answer is success.
func (e *exporter) post(ctx context.Context, payload []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.URL, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", cloudEventsContentType)
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errors.New("webhook answered " + resp.Status)
	}
	return nil
}
