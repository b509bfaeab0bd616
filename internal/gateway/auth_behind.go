package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/store"
)

// WriteBehindDelay is how long the gateway gathers last_used_at updates and refused
// authentications before writing them in one batch: the store sees at most one write transaction
// per WriteBehindDelay for each, however many requests arrive.
const WriteBehindDelay = 5 * time.Second

// writeBehindTimeout bounds one batched write.
const writeBehindTimeout = 10 * time.Second

// AuditActorGateway is the audit log actor of entries the serving gateway writes itself.
const AuditActorGateway = "gateway"

// behind runs flush once, WriteBehindDelay after the first kick since the last flush, on a timer
// of the injected clock (AfterFunc: no goroutine exists while nothing is pending). close stops a
// pending timer, waits for a running flush and flushes what is left. A clock without AfterFunc
// flushes at every kick.
type behind struct {
	clk   clock.WithDelayedExecution // nil: synchronous
	delay time.Duration
	flush func()

	mu     sync.Mutex
	armed  bool
	closed bool
	gen    uint64
	timer  clock.Timer
	wg     sync.WaitGroup
}

func newBehind(clk clock.PassiveClock, delay time.Duration, flush func()) *behind {
	b := &behind{delay: delay, flush: flush}
	b.clk, _ = clk.(clock.WithDelayedExecution)
	return b
}

// kick schedules a flush unless one is scheduled. It never holds b.mu while calling the clock: a
// fake clock runs AfterFunc callbacks under its own lock, and fire takes b.mu.
func (b *behind) kick() {
	if b.clk == nil {
		b.flush()
		return
	}
	b.mu.Lock()
	if b.armed || b.closed {
		b.mu.Unlock()
		return
	}
	b.armed = true
	b.gen++
	gen := b.gen
	b.wg.Add(1)
	b.mu.Unlock()
	tm := b.clk.AfterFunc(b.delay, func() { b.fire(gen) })
	b.mu.Lock()
	if b.gen == gen && b.armed {
		b.timer = tm
	}
	b.mu.Unlock()
}

func (b *behind) fire(gen uint64) {
	defer b.wg.Done()
	b.mu.Lock()
	if b.gen == gen {
		b.armed, b.timer = false, nil
	}
	b.mu.Unlock()
	b.flush()
}

// close flushes what is pending and stops further timers; kicks after close flush nothing until
// the next close (the gateway is closed for good).
func (b *behind) close() { b.sync(true) }

// sync stops a pending timer, waits for a running flush and flushes now; closing also refuses
// later timers.
func (b *behind) sync(closing bool) {
	b.mu.Lock()
	b.closed = b.closed || closing
	tm := b.timer
	b.timer = nil
	b.armed = false
	b.gen++ // a callback already under way no longer owns armed/timer
	b.mu.Unlock()
	if tm != nil && tm.Stop() {
		b.wg.Done() // its callback will never run
	}
	b.wg.Wait()
	b.flush()
}

// toucher is the write-behind of api_keys.last_used_at: authenticate hands it a key at most once
// per TouchInterval (principal.lastUsed), and it writes every key touched since its last flush in
// one transaction (store.TouchAPIKeys).
type toucher struct {
	st  *store.Store
	log *slog.Logger
	b   *behind

	mu      sync.Mutex
	pending map[string]time.Time
}

func newToucher(st *store.Store, clk clock.PassiveClock, log *slog.Logger) *toucher {
	t := &toucher{st: st, log: log, pending: map[string]time.Time{}}
	t.b = newBehind(clk, WriteBehindDelay, t.flush)
	return t
}

func (t *toucher) touch(keyID string, at time.Time) {
	t.mu.Lock()
	if at.After(t.pending[keyID]) {
		t.pending[keyID] = at
	}
	t.mu.Unlock()
	t.b.kick()
}

func (t *toucher) flush() {
	t.mu.Lock()
	batch := t.pending
	t.pending = map[string]time.Time{}
	t.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeBehindTimeout)
	defer cancel()
	if err := t.st.TouchAPIKeys(ctx, batch); err != nil {
		t.log.Warn("gateway: updating last_used_at failed", "keys", len(batch), "err", err)
	}
}

// authAuditor records refused authentications in the audit log without one write per refusal
// (a flood of bad keys must not become a flood of writes): per WriteBehindDelay it appends one
// "auth.failure" entry per reason with the count and the first and last time seen. Entries never
// hold a key or a hash.
type authAuditor struct {
	st  *store.Store
	log *slog.Logger
	b   *behind
	// notAudited counts refusals whose audit entry could not be written.
	notAudited prometheus.Counter

	mu      sync.Mutex
	pending map[string]*authFailures
}

type authFailures struct {
	Count       int64     `json:"count"`
	First, Last time.Time `json:"-"`
	FirstAt     string    `json:"first_at"`
	LastAt      string    `json:"last_at"`
}

func newAuthAuditor(st *store.Store, clk clock.PassiveClock, log *slog.Logger, notAudited prometheus.Counter) *authAuditor {
	a := &authAuditor{st: st, log: log, notAudited: notAudited, pending: map[string]*authFailures{}}
	a.b = newBehind(clk, WriteBehindDelay, a.flush)
	return a
}

func (a *authAuditor) refused(reason string, at time.Time) {
	if a == nil {
		return
	}
	a.mu.Lock()
	f := a.pending[reason]
	if f == nil {
		f = &authFailures{First: at}
		a.pending[reason] = f
	}
	f.Count++
	f.Last = at
	a.mu.Unlock()
	a.b.kick()
}

func (a *authAuditor) flush() {
	a.mu.Lock()
	batch := a.pending
	a.pending = map[string]*authFailures{}
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), writeBehindTimeout)
	defer cancel()
	for _, reason := range slices.Sorted(maps.Keys(batch)) {
		f := batch[reason]
		f.FirstAt, f.LastAt = f.First.UTC().Format(time.RFC3339Nano), f.Last.UTC().Format(time.RFC3339Nano)
		detail, _ := json.Marshal(f)
		err := a.st.AppendAudit(ctx, &store.AuditEntry{At: f.Last, Actor: AuditActorGateway, Action: "auth.failure", Target: reason, Detail: string(detail)})
		if err != nil {
			a.notAudited.Add(float64(f.Count))
			a.log.Error("gateway: auditing refused authentications failed", "reason", reason, "count", f.Count, "err", err)
		}
	}
}

// initBackground builds the parts of the gateway owned by slo.go, iolog.go and the write-behind of
// auth.go; called by New once g.cfg, g.st, g.clk, g.log and g.auth are set.
func (g *Gateway) initBackground(reg prometheus.Registerer) error {
	tiers := slices.Sorted(maps.Keys(g.cfg.Tiers))
	if !slices.Contains(tiers, "") {
		tiers = append([]string{""}, tiers...)
	}
	var err error
	if g.slo, err = newSLOMetrics(reg, g.cfg.SLO, tiers); err != nil {
		return err
	}
	if g.iolog, err = newIOLog(g.st, g.cfg.IOLog, g.clk, reg, g.log); err != nil {
		return err
	}
	notAudited := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gateway_auth_failures_not_audited_total",
		Help: "Refused authentications whose coalesced audit log entry could not be written."})
	if err := reg.Register(notAudited); err != nil {
		return err
	}
	g.touches = newToucher(g.st, g.clk, g.log)
	g.authAud = newAuthAuditor(g.st, g.clk, g.log, notAudited)
	g.auth.touches = g.touches
	g.auth.audit = g.authAud
	return nil
}

// closeBackground writes pending last_used_at updates and refused-authentication audit entries now and
// stops their timers: part of Close.
func (g *Gateway) closeBackground() {
	if g.touches != nil {
		g.touches.b.close()
	}
	if g.authAud != nil {
		g.authAud.b.close()
	}
}

// syncWriteBehind writes pending last_used_at updates and audit entries now (tests, admin reads).
func (g *Gateway) syncWriteBehind() {
	if g.touches != nil {
		g.touches.b.sync(false)
	}
	if g.authAud != nil {
		g.authAud.b.sync(false)
	}
}
