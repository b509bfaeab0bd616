package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// errLedgerClosed is returned by ledger.write after Close.
var errLedgerClosed = errors.New("gateway: usage ledger closed")

// ledger is the group-commit writer of usage records. Requests hand their record to write, which
// returns when the transaction holding it has committed (or failed): the records of concurrent
// requests share one transaction (store.WriteUsageBatch), so durability costs one commit per
// batch, not per request.
//
// There is no writer goroutine: the first request that finds no commit running becomes the
// leader and commits the queue (up to max_batch records per transaction) until its own record is
// committed; records that arrive meanwhile form the next batch, so batches grow with load and an
// idle request waits for a single commit. If records are still queued when the leader's own
// record is done, a short-lived goroutine takes over until the queue is empty, so no request
// waits for others' commits longer than its own. With config ledger.max_delay > 0 the leader
// first waits up to that long for a full batch.
//
// A batch that fails is retried record by record, so one bad record fails only its own request;
// every waiter gets its own record's error. Close refuses new records and waits for the commits
// under way.
type ledger struct {
	st       *store.Store
	clk      clock.Clock
	log      *slog.Logger
	maxBatch int
	maxDelay time.Duration
	timeout  time.Duration
	event    store.UsageEventFunc // builds each new record's outbox event; nil: no export
	notify   func()               // called after a commit that wrote outbox events; may be nil

	commits prometheus.Counter
	records prometheus.Counter
	errs    prometheus.Counter
	commitS prometheus.Histogram

	mu         sync.Mutex
	idle       *sync.Cond // signalled when committing turns false
	queue      []*ledgerWrite
	committing bool // a leader is committing the queue
	closed     bool
	full       chan struct{} // with max_delay: a batch is full, the leader may stop waiting
}

type ledgerWrite struct {
	rec  *store.UsageRecord
	res  chan ledgerResult // buffered: the committer never blocks on a waiter that left
	done bool              // the result was sent (guarded by the leader that commits it)
}

type ledgerResult struct {
	out store.UsageOutcome
	err error
}

// newLedger returns the writer of cfg over st; reg receives
//
//	strata_gateway_ledger_commits_total         transactions committed (or failed)
//	strata_gateway_ledger_records_total         records written in them (records / commits = mean batch)
//	strata_gateway_ledger_commit_errors_total   failed transactions
//	strata_gateway_ledger_commit_seconds        histogram of one transaction's duration
func newLedger(st *store.Store, cfg config.Ledger, clk clock.Clock, reg prometheus.Registerer, log *slog.Logger,
	event store.UsageEventFunc, notify func()) (*ledger, error) {
	l := &ledger{st: st, clk: clk, log: log, maxBatch: max(cfg.MaxBatch, 1), maxDelay: cfg.MaxDelay.D(),
		timeout: cfg.WriteTimeout.D(), event: event, notify: notify,
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_ledger_commits_total",
			Help: "Usage ledger transactions (group commits), successful or not."}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_ledger_records_total",
			Help: "Usage records handed to ledger transactions; divided by commits it is the mean batch size."}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_ledger_commit_errors_total",
			Help: "Usage ledger transactions that failed (their records are retried one by one)."}),
		commitS: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_gateway_ledger_commit_seconds",
			Help:    "Duration of one usage ledger transaction.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16)}),
		full: make(chan struct{}, 1),
	}
	l.idle = sync.NewCond(&l.mu)
	if l.timeout <= 0 {
		l.timeout = usageWriteTimeout
	}
	for _, c := range []prometheus.Collector{l.commits, l.records, l.errs, l.commitS} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// write hands rec over and waits until the transaction holding it committed. It returns the
// outcome (the key it is stored under, whether it was new) or the error of its write. A context
// that ends first returns its error (the record may still commit afterwards); a request that
// leads commits is not interrupted by its context.
func (l *ledger) write(ctx context.Context, rec *store.UsageRecord) (store.UsageOutcome, error) {
	w := &ledgerWrite{rec: rec, res: make(chan ledgerResult, 1)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return store.UsageOutcome{}, errLedgerClosed
	}
	l.queue = append(l.queue, w)
	if len(l.queue) >= l.maxBatch {
		select {
		case l.full <- struct{}{}:
		default:
		}
	}
	lead := !l.committing
	l.committing = true
	l.mu.Unlock()
	if lead {
		l.lead(w)
	}
	select {
	case r := <-w.res:
		return r.out, r.err
	case <-ctx.Done():
		return store.UsageOutcome{}, fmt.Errorf("gateway: usage record commit not confirmed: %w", ctx.Err())
	}
}

// lead commits batches from the queue until own (nil: until the queue is empty) has its result,
// then hands the rest of the queue to a new goroutine, or, the queue empty, ends the commit.
func (l *ledger) lead(own *ledgerWrite) {
	for {
		l.mu.Lock()
		n := min(len(l.queue), l.maxBatch)
		if n == 0 {
			l.committing = false
			l.idle.Broadcast()
			l.mu.Unlock()
			return
		}
		if own != nil && own.done {
			l.mu.Unlock()
			go l.lead(nil) // still committing: the queue's records are the new leader's
			return
		}
		if l.maxDelay > 0 && n < l.maxBatch {
			l.mu.Unlock()
			l.linger()
			l.mu.Lock()
			n = min(len(l.queue), l.maxBatch)
		}
		batch := append([]*ledgerWrite(nil), l.queue[:n]...)
		clear(l.queue[:n])
		l.queue = l.queue[n:]
		l.mu.Unlock()
		l.commit(batch)
	}
}

// linger waits up to max_delay for the queue to hold a full batch.
func (l *ledger) linger() {
	t := l.clk.NewTimer(l.maxDelay)
	defer t.Stop()
	select {
	case <-l.full:
	case <-t.C():
	}
}

// Close refuses new records and waits until the records handed over are committed. Calling it
// again is a no-op.
func (l *ledger) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for l.committing {
		l.idle.Wait()
	}
}

func (l *ledger) commit(batch []*ledgerWrite) {
	recs := make([]*store.UsageRecord, len(batch))
	for i, w := range batch {
		recs[i] = w.rec
	}
	outs, err := l.tx(recs)
	switch {
	case err == nil:
		for i, w := range batch {
			w.send(ledgerResult{out: outs[i]})
		}
	case len(batch) == 1:
		batch[0].send(ledgerResult{err: err})
	default:
		// Isolate the failure: a record that cannot be written must not fail its neighbours.
		for _, w := range batch {
			outs, err := l.tx([]*store.UsageRecord{w.rec})
			if err != nil {
				w.send(ledgerResult{err: err})
				continue
			}
			w.send(ledgerResult{out: outs[0]})
		}
	}
}

// send delivers w's result; only the goroutine committing w calls it.
func (w *ledgerWrite) send(r ledgerResult) {
	w.res <- r
	w.done = true
}

// tx runs one transaction, bounded by the write timeout, and counts it.
func (l *ledger) tx(recs []*store.UsageRecord) ([]store.UsageOutcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	start := time.Now() // wall time on purpose: this measures the database, not simulated time
	outs, err := l.st.WriteUsageBatch(ctx, recs, l.event)
	l.commitS.Observe(time.Since(start).Seconds())
	l.commits.Inc()
	l.records.Add(float64(len(recs)))
	if err != nil {
		l.errs.Inc()
		l.log.Warn("gateway: usage ledger transaction failed", "records", len(recs), "err", err)
		return nil, err
	}
	if l.notify != nil && l.event != nil {
		for _, o := range outs {
			if o.Inserted {
				l.notify()
				break
			}
		}
	}
	return outs, nil
}

// meterMetrics are the metering counters beside the ledger's own.
type meterMetrics struct {
	rekeyed        prometheus.Counter
	streamsAborted prometheus.Counter
	idReused       prometheus.Counter
}

func newMeterMetrics(reg prometheus.Registerer) (*meterMetrics, error) {
	m := &meterMetrics{
		rekeyed: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_usage_rekeyed_total",
			Help: "Usage records stored under a derived id because another request's record held their request id."}),
		streamsAborted: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_streams_aborted_total",
			Help: "Streams cut before data: [DONE] because their usage record could not be committed."}),
		idReused: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_request_id_reused_total",
			Help: "Requests refused with 409 request_id_reused: their X-Request-Id was in flight or already metered."}),
	}
	for _, c := range []prometheus.Collector{m.rekeyed, m.streamsAborted, m.idReused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// initMetering builds the metering counters, the exporter (when config export.sink is set) and
// the ledger writer that fills the exporter's outbox, and starts them. Called by New.
func (g *Gateway) initMetering(reg prometheus.Registerer) error {
	mm, err := newMeterMetrics(reg)
	if err != nil {
		return fmt.Errorf("gateway: metrics: %w", err)
	}
	g.mm = mm
	if g.recent, err = lru.New[string, struct{}](recentIDs); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	var event store.UsageEventFunc
	var notify func()
	if g.cfg.Export.Sink != config.ExportSinkNone {
		ex, err := newExporter(g.st, g.cfg.Export, g.clk, reg, g.log)
		if err != nil {
			return err
		}
		g.exporter, event, notify = ex, ex.event, ex.notify
	}
	if g.ledger, err = newLedger(g.st, g.cfg.Ledger, g.clk, reg, g.log, event, notify); err != nil {
		g.exporter.Close()
		return fmt.Errorf("gateway: metrics: %w", err)
	}
	g.exporter.start()
	return nil
}

// closeMetering commits what the ledger holds, then stops the exporter.
func (g *Gateway) closeMetering() {
	if g.ledger != nil {
		g.ledger.Close()
	}
	g.exporter.Close()
}

// requestIDReused is the 409 answered to a request whose X-Request-Id another request of this
// gateway is serving or recently metered. The request id is the ledger's idempotency key:
// serving a second request under it would either drop its usage (LiteLLM issue #35563) or bill
// it under another id the client cannot match; OpenAI treats a client's id (X-Client-Request-Id)
// as a tracing label only, so refusing the reuse is the explicit choice.
func requestIDReused(id string) error {
	return openai.Errorf(http.StatusConflict, openai.TypeInvalidRequest, "request_id_reused",
		"X-Request-Id %q was already used by another request; send a new id with each request.", id)
}

// recentIDs is how many metered request ids a gateway remembers to refuse their reuse.
const recentIDs = 1 << 16

// claimRequestID reserves id for one request until release is called (when the request is done
// and its record written). It refuses an id another request of this process is serving, or one
// of the last recentIDs ids this process metered. It does not read the ledger: a point read per
// request opened SQLite connections faster than they were reused and stalled commits under load
// (seconds at 500 concurrent requests). A reuse it cannot see (another gateway replica, an id
// older than the window, a restart) is still never lost: the ledger stores the second record
// under a derived id (store.RekeyedUsageID) and counts it in strata_gateway_usage_rekeyed_total.
func (g *Gateway) claimRequestID(id string) (release func(), err error) {
	if g.recent.Contains(id) {
		g.mm.idReused.Inc()
		return nil, requestIDReused(id)
	}
	if _, loaded := g.inflight.LoadOrStore(id, struct{}{}); loaded {
		g.mm.idReused.Inc()
		return nil, requestIDReused(id)
	}
	return func() { g.inflight.Delete(id) }, nil
}
