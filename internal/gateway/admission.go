package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Admission state lives in a backend: memory (one gateway process) or Redis (every replica
// sharing one Redis). Both implement the same semantics:
//
//   - rates: GCRA per bucket for requests and tokens per minute (limits.go);
//   - concurrency: at most N requests of a tenant in flight, each slot a lease that expires after
//     the reservation TTL, so a crashed gateway's slots come back;
//   - budgets (monthly token quota, monthly spend cap): a counter of settled usage per tenant and
//     calendar month plus the open reservations. A reservation of amount a is granted iff
//     used + reserved + a <= cap; settlement removes it and adds the actual amount; a reservation
//     not settled within its TTL expires and stops counting.
//
// Bound: the reservations granted never sum beyond the cap, so settled usage exceeds the cap only
// by what requests used beyond their reservation (a prompt larger than its bytes/4 estimate);
// a request's reservation is its maximum (prompt estimate + output limit at the model's price),
// so with an output limit in force no request exceeds its reservation in output.

// errBackend marks a failure to reach the admission backend (Redis down); the limit's fail-open
// setting then decides.
var errBackend = errors.New("gateway: admission backend unavailable")

// budgetKey names one budget counter: a kind ("tokens" or "spend"), a tenant and a period
// ("2026-03" in the billing time zone).
type budgetKey struct {
	kind, tenant, period string
}

func (b budgetKey) String() string { return b.kind + ":" + b.tenant + ":" + b.period }

// backend is where admission state lives. Errors wrap errBackend.
type backend interface {
	// admitRates spends one request and tokens from bucket's GCRAs (rpm or tpm 0: that limit is
	// off), or nothing when one refuses; see limiter.admit.
	admitRates(ctx context.Context, bucket string, rpm, tpm int, tokens int64, strict bool) (admission, error)
	// settleRates corrects bucket's token GCRA by actual-charged tokens.
	settleRates(ctx context.Context, bucket string, tpm int, charged, actual int64) error
	// acquire takes one of limit concurrency slots of bucket for requestID until release, or for
	// ttl (timed by the backend's clock) at most.
	acquire(ctx context.Context, bucket, requestID string, limit int64, ttl time.Duration) (bool, error)
	release(ctx context.Context, bucket, requestID string) error
	// reserve reserves amount of budget b (capped at limit) for requestID, for ttl at most. base
	// loads the settled usage of the period from the ledger when the backend holds none yet.
	reserve(ctx context.Context, b budgetKey, requestID string, amount, limit int64, ttl time.Duration, base func(context.Context) (int64, error)) (granted bool, used int64, err error)
	// settleBudget ends requestID's reservation of b and adds actual to the settled usage.
	settleBudget(ctx context.Context, b budgetKey, requestID string, actual int64) error
	Close() error
}

// memoryBackend keeps admission state in this process.
type memoryBackend struct {
	clk    clock.PassiveClock
	limits *limiter

	mu      sync.Mutex
	slots   map[string]map[string]time.Time // bucket -> request id -> lease expiry
	budgets map[budgetKey]*memBudget
}

type memBudget struct {
	mu       sync.Mutex // held while loading the base, so the ledger is read once
	loaded   bool
	used     int64
	reserved int64
	res      map[string]memReservation
}

type memReservation struct {
	amount  int64
	expires time.Time
}

func newMemoryBackend(clk clock.PassiveClock) *memoryBackend {
	return &memoryBackend{clk: clk, limits: newLimiter(clk), slots: map[string]map[string]time.Time{}, budgets: map[budgetKey]*memBudget{}}
}

func (m *memoryBackend) admitRates(_ context.Context, bucket string, rpm, tpm int, tokens int64, strict bool) (admission, error) {
	return m.limits.admit(bucket, rpm, tpm, tokens, strict), nil
}

func (m *memoryBackend) settleRates(_ context.Context, bucket string, tpm int, charged, actual int64) error {
	m.limits.settle(bucket, tpm, charged, actual)
	return nil
}

func (m *memoryBackend) acquire(_ context.Context, bucket, requestID string, limit int64, ttl time.Duration) (bool, error) {
	now := m.clk.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.slots[bucket]
	if s == nil {
		s = map[string]time.Time{}
		m.slots[bucket] = s
	}
	for id, exp := range s {
		if !exp.After(now) {
			delete(s, id)
		}
	}
	if int64(len(s)) >= limit {
		return false, nil
	}
	s[requestID] = now.Add(ttl)
	return true, nil
}

func (m *memoryBackend) release(_ context.Context, bucket, requestID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.slots[bucket]; s != nil {
		delete(s, requestID)
		if len(s) == 0 {
			delete(m.slots, bucket)
		}
	}
	return nil
}

func (m *memoryBackend) budget(b budgetKey) *memBudget {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb := m.budgets[b]
	if mb == nil {
		mb = &memBudget{res: map[string]memReservation{}}
		m.budgets[b] = mb
	}
	return mb
}

func (m *memoryBackend) reserve(ctx context.Context, b budgetKey, requestID string, amount, limit int64, ttl time.Duration, base func(context.Context) (int64, error)) (bool, int64, error) {
	mb := m.budget(b)
	now := m.clk.Now()
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if !mb.loaded {
		used, err := base(ctx)
		if err != nil {
			return false, 0, fmt.Errorf("gateway: loading %s from the ledger: %w", b, err)
		}
		mb.used, mb.loaded = used, true
	}
	for id, r := range mb.res {
		if !r.expires.After(now) {
			mb.reserved -= r.amount
			delete(mb.res, id)
		}
	}
	if mb.used+mb.reserved+amount > limit {
		return false, mb.used + mb.reserved, nil
	}
	mb.res[requestID] = memReservation{amount, now.Add(ttl)}
	mb.reserved += amount
	return true, mb.used + mb.reserved, nil
}

func (m *memoryBackend) settleBudget(_ context.Context, b budgetKey, requestID string, actual int64) error {
	mb := m.budget(b)
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if r, ok := mb.res[requestID]; ok {
		mb.reserved -= r.amount
		delete(mb.res, requestID)
	}
	if mb.loaded { // not loaded: the ledger, read at the first reservation, has this usage
		mb.used += actual
	}
	return nil
}

func (m *memoryBackend) Close() error { return nil }

// admitSpec is every admission check of one request, for a backend that runs them in one step.
type admitSpec struct {
	rateBucket  string
	rpm, tpm    int
	tokens      int64
	strict      bool
	concBucket  string
	concLimit   int64 // 0: no concurrency limit
	requestID   string
	ttl         time.Duration
	quota       *budgetKey // nil: no monthly token quota
	quotaLimit  int64
	quotaAmount int64
	spend       *budgetKey // nil: no monthly spend cap
	spendLimit  int64
	spendAmount int64
}

// admitResult is the answer of oneShotAdmitter.admitAll.
type admitResult struct {
	// adm holds the rate verdicts; adm.rejected is set when a rate limit refused.
	adm admission
	// refused names a later check that refused ("concurrency", "quota", "spend").
	refused string
	// needBase names budgets ("quota", "spend") whose period must be loaded from the ledger
	// before the request can be decided; nothing was written.
	needBase []string
	// quotaUsed and spendUsed are the budgets' used + reserved after the decision.
	quotaUsed, spendUsed int64
}

// oneShotAdmitter is the optional capability of a backend that decides a whole admission in one
// atomic step (Redis: one round trip) instead of one call per check.
type oneShotAdmitter interface {
	admitAll(ctx context.Context, s admitSpec) (admitResult, error)
	// loadBudget stores the settled usage of b's period, unless another replica did first.
	loadBudget(ctx context.Context, b budgetKey, used int64) error
	// settleAll settles a whole ticket at once (rates, slot, budgets).
	settleAll(ctx context.Context, s settleSpec) error
}

// settleSpec is a ticket's settlement for oneShotAdmitter.settleAll.
type settleSpec struct {
	rateBucket            string
	tpm                   int
	charged, actualTokens int64
	slot                  string // "" when no slot was taken
	requestID             string
	quota, spend          *budgetKey // nil: not reserved
	actualSpend           int64
}
