package gateway

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// The I/O log keeps request and response bodies of the tenants that opted in (tenants.iolog, set
// with PATCH /admin/v1/tenants/{name} {"iolog": true} or `strata tenants iolog NAME on`) in its
// own table (io_log), redacted before they are written and purged after
// config.IOLog.RetentionDays. Bodies are never written anywhere else: not to slog, not to
// metrics, not to the usage ledger.

// ioRecord is one request/response pair handed to ioLog.record by the metering code at the point
// its usage record is final (contract C6).
type ioRecord struct {
	TenantID, KeyID, RequestID, Model string
	Request                           []byte // the client's request body as received
	Response                          []byte // non-stream: the JSON body; stream: the concatenated content/tool-call text
	At                                time.Time
}

// redacted replaces every match of a redaction pattern.
const redacted = "[REDACTED]"

// Default redaction patterns (config.IOLog.NoDefaultRedaction turns them off).
var (
	// emailPattern: a pragmatic address shape (local@domain.tld), not RFC 5322's full grammar.
	emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)
	// cardPattern: 13 to 19 digits (ISO/IEC 7812 PAN lengths), optionally grouped by single
	// spaces or dashes; a match is redacted only when its digits pass the Luhn check.
	cardPattern = regexp.MustCompile(`\b\d(?:[ \-]?\d){12,18}\b`)
)

// ioLogTTL is how long the set of opted-in tenants is reused before it is read again.
const ioLogTTL = 5 * time.Second

// ioLogWriteTimeout bounds the write of one entry: the I/O log never holds a response long.
const ioLogWriteTimeout = 2 * time.Second

// ioLog is the opt-in per-tenant I/O log. A nil *ioLog logs nothing.
type ioLog struct {
	st      *store.Store
	clk     clock.Clock
	log     *slog.Logger
	cfg     config.IOLog
	redact  []*regexp.Regexp
	ttl     time.Duration
	written prometheus.Counter
	failed  prometheus.Counter
	purged  prometheus.Counter

	mu      sync.Mutex
	tenants map[string]bool // opted-in tenant ids
	fetched time.Time
	loading bool
}

// newIOLog builds the I/O log of cfg (already validated: the patterns compile) and registers its
// counters on reg.
func newIOLog(st *store.Store, cfg config.IOLog, clk clock.Clock, reg prometheus.Registerer, log *slog.Logger) (*ioLog, error) {
	l := &ioLog{st: st, clk: clk, log: log, cfg: cfg, ttl: ioLogTTL,
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_iolog_records_total",
			Help: "Request/response pairs written to the I/O log of opted-in tenants."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_iolog_write_errors_total",
			Help: "I/O log entries that could not be written (dropped; the request is unaffected)."}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_iolog_purged_total",
			Help: "I/O log entries deleted after their retention."}),
	}
	if !cfg.NoDefaultRedaction {
		l.redact = append(l.redact, emailPattern, cardPattern)
	}
	for i, s := range cfg.Redact {
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("gateway: iolog.redact[%d]: %w", i, err)
		}
		l.redact = append(l.redact, re)
	}
	if l.cfg.MaxBodyBytes <= 0 {
		l.cfg.MaxBodyBytes = 1 << 20
	}
	if l.cfg.RetentionDays <= 0 {
		l.cfg.RetentionDays = 30
	}
	for _, c := range []prometheus.Collector{l.written, l.failed, l.purged} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// enabled reports whether tenantID opted in. It reads a set of opted-in tenants refreshed at most
// every ioLogTTL (one query for all tenants); while one caller refreshes, others use the previous
// set. A store error keeps the previous set (logged). Safe on a nil receiver (false).
func (l *ioLog) enabled(tenantID string) bool {
	if l == nil {
		return false
	}
	now := l.clk.Now()
	l.mu.Lock()
	stale := l.tenants == nil || now.Sub(l.fetched) >= l.ttl || now.Before(l.fetched)
	if !stale || l.loading {
		on := l.tenants[tenantID]
		l.mu.Unlock()
		return on
	}
	l.loading = true
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), ioLogWriteTimeout)
	ids, err := l.st.IOLogTenants(ctx)
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loading = false
	if err != nil {
		l.log.Warn("gateway: reading i/o log tenants failed", "err", err)
		if l.tenants == nil {
			l.tenants = map[string]bool{}
		}
		l.fetched = now
		return l.tenants[tenantID]
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	l.tenants, l.fetched = set, now
	return set[tenantID]
}

// invalidate drops the cached set (after an admin change in this process).
func (l *ioLog) invalidate() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.tenants = nil
	l.mu.Unlock()
}

// record writes r, redacted and cut to MaxBodyBytes per body, when its tenant opted in. The write
// is bounded by ioLogWriteTimeout and detached from ctx's cancellation (a client that went away
// is still logged); a failure is counted and logged without the bodies. Safe on a nil receiver.
func (l *ioLog) record(ctx context.Context, r ioRecord) {
	if l == nil || !l.enabled(r.TenantID) {
		return
	}
	at := r.At
	if at.IsZero() {
		at = l.clk.Now()
	}
	e := &store.IOLogEntry{ID: newID("io"), TenantID: r.TenantID, KeyID: r.KeyID, RequestID: r.RequestID, Model: r.Model,
		Request: l.scrub(r.Request), Response: l.scrub(r.Response), CreatedAt: at.UTC().Truncate(time.Millisecond)}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ioLogWriteTimeout)
	defer cancel()
	if err := l.st.InsertIOLog(wctx, e); err != nil {
		l.failed.Inc()
		l.log.ErrorContext(ctx, "gateway: i/o log write failed", "request_id", r.RequestID, "err", err)
		return
	}
	l.written.Inc()
}

// scrub cuts b to MaxBodyBytes and replaces every match of the redaction patterns (card numbers
// only when they pass the Luhn check). Redaction runs before the cut would matter: the body is cut
// first, then redacted, so a secret cannot survive by straddling the cut... except its cut-off
// head, which the patterns may no longer recognise; bodies are therefore cut generously (1 MiB
// by default).
func (l *ioLog) scrub(b []byte) []byte {
	if len(b) > l.cfg.MaxBodyBytes {
		b = b[:l.cfg.MaxBodyBytes]
	}
	out := bytes.Clone(b)
	for _, re := range l.redact {
		if re == cardPattern {
			out = re.ReplaceAllFunc(out, func(m []byte) []byte {
				if luhnValid(m) {
					return []byte(redacted)
				}
				return m
			})
			continue
		}
		out = re.ReplaceAll(out, []byte(redacted))
	}
	return out
}

// luhnValid reports whether the digits of s (other bytes skipped) pass the Luhn check (ISO/IEC
// 7812-1 Annex B).
func luhnValid(s []byte) bool {
	sum, n := 0, 0
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if c < '0' || c > '9' {
			continue
		}
		d := int(c - '0')
		if n%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		n++
	}
	return n > 0 && sum%10 == 0
}

// purge deletes the entries older than the retention and returns how many it deleted.
func (l *ioLog) purge(ctx context.Context) (int64, error) {
	cutoff := l.clk.Now().Add(-time.Duration(l.cfg.RetentionDays) * 24 * time.Hour)
	n, err := l.st.PurgeIOLog(ctx, cutoff)
	if err != nil {
		return 0, err
	}
	l.purged.Add(float64(n))
	return n, nil
}

// runPurge purges once now and then every PurgeInterval of the injected clock, until ctx ends.
// Errors are logged; the loop goes on.
func (l *ioLog) runPurge(ctx context.Context) {
	interval := l.cfg.PurgeInterval.D()
	if interval <= 0 {
		interval = time.Hour
	}
	once := func() {
		if n, err := l.purge(ctx); err != nil {
			if ctx.Err() == nil {
				l.log.ErrorContext(ctx, "gateway: i/o log purge failed", "err", err)
			}
		} else if n > 0 {
			l.log.InfoContext(ctx, "gateway: i/o log purged", "entries", n)
		}
	}
	once()
	t := l.clk.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			once()
			t.Reset(interval)
		}
	}
}

// RunIOLogPurge deletes I/O log entries older than config iolog.retention_days, once at once and
// then every iolog.purge_interval, until ctx is done. The stack runs it beside the gateway.
func (g *Gateway) RunIOLogPurge(ctx context.Context) {
	if g.iolog == nil {
		<-ctx.Done()
		return
	}
	g.iolog.runPurge(ctx)
}
