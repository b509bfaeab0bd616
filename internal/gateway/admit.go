package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// errInsufficientQuota is OpenAI's answer to a request beyond the account's quota (429 with type
// and code insufficient_quota), distinct from rate_limit_exceeded: waiting a minute does not help.
var errInsufficientQuota = &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeInsufficient, Code: openai.CodeInsufficientQuota,
	Message: "You exceeded your current quota, please check your plan and billing details."}

// errAdmissionUnavailable answers a request whose admission state could not be read (Redis
// down for a limit that fails closed, or the ledger unreadable): the client may retry.
var errAdmissionUnavailable = &openai.Error{Status: http.StatusServiceUnavailable, Type: openai.TypeUnavailable,
	Message: "The service is temporarily unable to admit requests; retry later."}

// ticket is what one admitted request holds from the admission backend: its rate charge, its
// concurrency slot and its budget reservations. Exactly one settle or cancel returns them.
type ticket struct {
	g         *Gateway
	id        string // a fresh id per admission: request ids come from clients and may repeat
	bucket    string
	tpm       int
	charged   int64  // tokens charged to the GCRA
	slot      string // concurrency bucket; "" if no slot was taken
	quota     *budgetKey
	spend     *budgetKey
	price     *store.Price // the model's price at admission; nil if unpriced
	spendHeld int64        // micro-USD reserved
	done      atomic.Bool
}

// admit runs the admission checks of one inference request in order: request and token rates,
// concurrency, monthly token quota, monthly spend cap. A refusal undoes what earlier checks took
// and returns the error to answer (its retry-after already set on h). The admission is returned
// for the x-ratelimit-* headers also when refused.
func (g *Gateway) admit(ctx context.Context, h http.Header, p *principal, model string, estimate int64, strict bool, outTokens, promptEst int64) (*ticket, *admission, error) {
	if os, ok := g.backend.(oneShotAdmitter); ok && !g.stepAdmission {
		return g.admitOneShot(ctx, os, h, p, model, estimate, strict, outTokens, promptEst)
	}
	pol := &p.policy
	tk := &ticket{g: g, id: uuid.NewString(), bucket: pol.rateBucket, tpm: int(min(pol.tpm, int64(^uint(0)>>1)))}
	adm, err := g.backend.admitRates(ctx, pol.rateBucket, int(pol.rpm), tk.tpm, estimate, strict)
	if err != nil {
		if open, ferr := g.failMode(ctx, "rates", err); !open {
			return nil, &admission{}, ferr
		}
		adm, tk.tpm = admission{}, 0
	}
	if adm.rejected != "" {
		g.m.rateLimited.WithLabelValues(adm.rejected).Inc()
		if !adm.tooLarge {
			h.Set(openai.HeaderRetryAfter, retryAfterSeconds(adm.retryAfter()))
		}
		return nil, &adm, rateLimitError(model, &adm, estimate)
	}
	tk.charged = adm.charged
	refuse := func(err error) (*ticket, *admission, error) {
		tk.cancel(ctx)
		return nil, &adm, err
	}
	if pol.maxConcurrent > 0 {
		bucket := "t:" + p.tenant.ID
		ok, err := g.backend.acquire(ctx, bucket, tk.id, pol.maxConcurrent, g.cfg.Admission.ReservationTTL.D())
		switch {
		case err != nil:
			if open, ferr := g.failMode(ctx, "concurrency", err); !open {
				return refuse(ferr)
			}
		case !ok:
			g.m.rateLimited.WithLabelValues("concurrency").Inc()
			h.Set(openai.HeaderRetryAfter, "1")
			return refuse(errTooManyConcurrent(model, pol.maxConcurrent))
		default:
			tk.slot = bucket
		}
	}
	now := g.clk.Now()
	period, start, _ := Month(now, g.loc)
	if pol.monthlyTokens > 0 {
		b := budgetKey{"tokens", p.tenant.ID, period}
		if err := g.reserve(ctx, tk, b, "quota", estimate, pol.monthlyTokens, func(ctx context.Context) (int64, error) {
			tots, err := g.st.UsageTotals(ctx, p.tenant.ID, start, start.AddDate(0, 1, 0))
			var sum int64
			for _, t := range tots {
				sum = satAdd(sum, satAdd(t.PromptTokens, t.CompletionTokens))
			}
			return sum, err
		}); err != nil {
			return refuse(err)
		}
	}
	if pol.monthlySpend > 0 {
		books, err := g.prices.get(ctx, now)
		if err != nil {
			g.log.ErrorContext(ctx, "gateway: reading the price book failed", "err", err)
			return refuse(errAdmissionUnavailable)
		}
		pb := books.forTier(pol.tier)
		if price, ok := pb.at(model, now); ok {
			tk.price = price
			tk.spendHeld = microsUp(costPicos(price, promptEst, 0, outTokens))
		}
		b := budgetKey{"spend", p.tenant.ID, period}
		if err := g.reserve(ctx, tk, b, "spend", tk.spendHeld, pol.monthlySpend, func(ctx context.Context) (int64, error) {
			lines, err := rate(ctx, g.st, pb, p.tenant.ID, p.tenant.Name, start, start.AddDate(0, 1, 0))
			var sum int64
			for _, l := range lines {
				sum = satAdd(sum, l.CostMicros)
			}
			return sum, err
		}); err != nil {
			return refuse(err)
		}
	}
	return tk, &adm, nil
}

// reserve takes amount of budget b for tk, recording the reservation in tk when granted.
func (g *Gateway) reserve(ctx context.Context, tk *ticket, b budgetKey, limit string, amount, capacity int64, base func(context.Context) (int64, error)) error {
	ok, _, err := g.backend.reserve(ctx, b, tk.id, amount, capacity, g.cfg.Admission.ReservationTTL.D(), base)
	switch {
	case err != nil:
		if open, ferr := g.failMode(ctx, limit, err); !open {
			return ferr
		}
		return nil
	case !ok:
		g.m.quotaRefused.WithLabelValues(limit).Inc()
		return errInsufficientQuota
	}
	if limit == "quota" {
		tk.quota = &b
	} else {
		tk.spend = &b
	}
	return nil
}

// failMode decides a check the backend could not answer: open (skip the limit, counted) or
// closed (503). An error that is not the backend's (the ledger unreadable) always fails closed:
// nothing is known to admit against.
func (g *Gateway) failMode(ctx context.Context, limit string, err error) (bool, error) {
	if !errors.Is(err, errBackend) {
		g.log.ErrorContext(ctx, "gateway: admission failed", "limit", limit, "err", err)
		return false, errAdmissionUnavailable
	}
	g.m.backendErrors.WithLabelValues(limit).Inc()
	if g.cfg.Admission.FailsOpen(limit) {
		g.m.failedOpen.WithLabelValues(limit).Inc()
		g.log.WarnContext(ctx, "gateway: admission backend unreachable, failing open", "limit", limit, "err", err)
		return true, nil
	}
	g.log.ErrorContext(ctx, "gateway: admission backend unreachable, failing closed", "limit", limit, "err", err)
	return false, errAdmissionUnavailable
}

// settle returns the ticket with the usage actually served: the token bucket is corrected, the
// slot released, and each budget's reservation replaced by the actual amount (tokens: prompt +
// completion; spend: the cost at the admission price, rounded up). Only the first call acts.
// Backend failures are logged: the usage is in the ledger, and a budget reloads from it.
func (tk *ticket) settle(ctx context.Context, prompt, cached, completion int64) {
	if tk == nil || !tk.done.CompareAndSwap(false, true) {
		return
	}
	g := tk.g
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	tokens := satAdd(prompt, completion)
	if os, ok := g.backend.(oneShotAdmitter); ok && !g.stepAdmission {
		tk.settleOneShot(ctx, os, prompt, cached, completion)
		return
	}
	// A failed settlement leaks a reservation until its TTL (a false insufficient_quota meanwhile),
	// so a backend failure is retried twice before it is logged and left to the TTL.
	logErr := func(what string, op func() error) {
		err := op()
		for i := 0; err != nil && errors.Is(err, errBackend) && i < 2; i++ {
			time.Sleep(time.Duration(25<<i) * time.Millisecond)
			err = op()
		}
		if err != nil {
			if errors.Is(err, errBackend) {
				g.m.backendErrors.WithLabelValues(what).Inc()
			}
			g.log.WarnContext(ctx, "gateway: settling admission failed", "what", what, "err", err)
		}
	}
	logErr("rates", func() error { return g.backend.settleRates(ctx, tk.bucket, tk.tpm, tk.charged, tokens) })
	if tk.slot != "" {
		logErr("concurrency", func() error { return g.backend.release(ctx, tk.slot, tk.id) })
	}
	if tk.quota != nil {
		logErr("quota", func() error { return g.backend.settleBudget(ctx, *tk.quota, tk.id, tokens) })
	}
	if tk.spend != nil {
		var cost int64
		if tk.price != nil {
			cost = microsUp(costPicos(tk.price, prompt, cached, completion))
		}
		logErr("spend", func() error { return g.backend.settleBudget(ctx, *tk.spend, tk.id, cost) })
	}
}

// cancel returns the ticket of a request that served nothing.
func (tk *ticket) cancel(ctx context.Context) { tk.settle(ctx, 0, 0, 0) }

// errTooManyConcurrent is the 429 of a request over its tenant's concurrency limit.
func errTooManyConcurrent(model string, limit int64) *openai.Error {
	return &openai.Error{Status: http.StatusTooManyRequests, Type: "requests", Code: openai.CodeRateLimitExceeded,
		Message: "Too many concurrent requests for " + model + ": Limit " + strconv.FormatInt(limit, 10) +
			". Please retry when one of your requests has finished."}
}

// admitOneShot is admit on a backend that decides every check in one step (Redis: one round trip
// in the steady state; the first request of a budget period also loads the period's usage from
// the ledger). The answers, metrics and headers are those of the step-by-step path; a backend
// failure is decided by each enabled limit's fail-open setting in admit's order.
func (g *Gateway) admitOneShot(ctx context.Context, os oneShotAdmitter, h http.Header, p *principal, model string, estimate int64, strict bool, outTokens, promptEst int64) (*ticket, *admission, error) {
	pol := &p.policy
	tk := &ticket{g: g, id: uuid.NewString(), bucket: pol.rateBucket, tpm: int(min(pol.tpm, int64(^uint(0)>>1)))}
	now := g.clk.Now()
	period, start, _ := Month(now, g.loc)
	end := start.AddDate(0, 1, 0)
	s := admitSpec{rateBucket: pol.rateBucket, rpm: int(pol.rpm), tpm: tk.tpm, tokens: estimate, strict: strict, requestID: tk.id,
		ttl: g.cfg.Admission.ReservationTTL.D()}
	if pol.maxConcurrent > 0 {
		s.concBucket, s.concLimit = "t:"+p.tenant.ID, pol.maxConcurrent
	}
	bases := map[string]func(context.Context) (int64, error){}
	if pol.monthlyTokens > 0 {
		s.quota, s.quotaLimit, s.quotaAmount = &budgetKey{"tokens", p.tenant.ID, period}, pol.monthlyTokens, estimate
		bases["quota"] = func(ctx context.Context) (int64, error) {
			tots, err := g.st.UsageTotals(ctx, p.tenant.ID, start, end)
			var sum int64
			for _, t := range tots {
				sum = satAdd(sum, satAdd(t.PromptTokens, t.CompletionTokens))
			}
			return sum, err
		}
	}
	if pol.monthlySpend > 0 {
		books, err := g.prices.get(ctx, now)
		if err != nil {
			g.log.ErrorContext(ctx, "gateway: reading the price book failed", "err", err)
			return nil, &admission{}, errAdmissionUnavailable
		}
		pb := books.forTier(pol.tier)
		if price, ok := pb.at(model, now); ok {
			tk.price = price
			tk.spendHeld = microsUp(costPicos(price, promptEst, 0, outTokens))
		}
		s.spend, s.spendLimit, s.spendAmount = &budgetKey{"spend", p.tenant.ID, period}, pol.monthlySpend, tk.spendHeld
		bases["spend"] = func(ctx context.Context) (int64, error) {
			lines, err := rate(ctx, g.st, pb, p.tenant.ID, p.tenant.Name, start, end)
			var sum int64
			for _, l := range lines {
				sum = satAdd(sum, l.CostMicros)
			}
			return sum, err
		}
	}
	if s.rpm <= 0 && s.tpm <= 0 && s.concLimit == 0 && s.quota == nil && s.spend == nil {
		return tk, &admission{}, nil // no limit: nothing to ask the backend
	}
	// failAll decides a backend failure limit by limit: the first that fails closed answers.
	failAll := func(err error) (*ticket, *admission, error) {
		enabled := []struct {
			name string
			on   bool
		}{{"rates", s.rpm > 0 || s.tpm > 0}, {"concurrency", s.concLimit > 0}, {"quota", s.quota != nil}, {"spend", s.spend != nil}}
		for _, l := range enabled {
			if !l.on {
				continue
			}
			if open, ferr := g.failMode(ctx, l.name, err); !open {
				return nil, &admission{}, ferr
			}
		}
		tk.tpm = 0
		return tk, &admission{}, nil
	}
	for attempt := 0; ; attempt++ {
		res, err := os.admitAll(ctx, s)
		if err != nil {
			return failAll(err)
		}
		if len(res.needBase) > 0 {
			if attempt > 0 {
				return failAll(backendErr(errors.New("budget usage vanished while loading")))
			}
			for _, name := range res.needBase {
				b := s.quota
				if name == "spend" {
					b = s.spend
				}
				base := bases[name]
				if b == nil || base == nil {
					return failAll(backendErr(fmt.Errorf("backend asked to load unknown budget %q", name)))
				}
				used, err := base(ctx)
				if err != nil {
					_, ferr := g.failMode(ctx, name, fmt.Errorf("gateway: loading %s from the ledger: %w", b, err))
					return nil, &admission{}, ferr
				}
				if err := os.loadBudget(ctx, *b, used); err != nil {
					if open, ferr := g.failMode(ctx, name, err); !open {
						return nil, &admission{}, ferr
					}
					if name == "quota" {
						s.quota = nil
					} else {
						s.spend = nil
					}
				}
			}
			continue
		}
		adm := res.adm
		if adm.rejected != "" {
			g.m.rateLimited.WithLabelValues(adm.rejected).Inc()
			if !adm.tooLarge {
				h.Set(openai.HeaderRetryAfter, retryAfterSeconds(adm.retryAfter()))
			}
			return nil, &adm, rateLimitError(model, &adm, estimate)
		}
		switch res.refused {
		case "":
		case "concurrency":
			g.m.rateLimited.WithLabelValues("concurrency").Inc()
			h.Set(openai.HeaderRetryAfter, "1")
			return nil, &adm, errTooManyConcurrent(model, pol.maxConcurrent)
		default:
			g.m.quotaRefused.WithLabelValues(res.refused).Inc()
			return nil, &adm, errInsufficientQuota
		}
		tk.charged = adm.charged
		if s.concLimit > 0 {
			tk.slot = s.concBucket
		}
		tk.quota, tk.spend = s.quota, s.spend
		return tk, &adm, nil
	}
}

// settleOneShot is settle in one backend call, retried twice on a backend failure like the
// step-by-step settlement (budget settlements are idempotent; a token-bucket correction applied
// by a call whose answer was lost is applied again, as on the step-by-step path).
func (tk *ticket) settleOneShot(ctx context.Context, os oneShotAdmitter, prompt, cached, completion int64) {
	g := tk.g
	s := settleSpec{rateBucket: tk.bucket, tpm: tk.tpm, charged: tk.charged, actualTokens: satAdd(prompt, completion), slot: tk.slot,
		requestID: tk.id, quota: tk.quota, spend: tk.spend}
	if tk.spend != nil && tk.price != nil {
		s.actualSpend = microsUp(costPicos(tk.price, prompt, cached, completion))
	}
	if (s.tpm <= 0 || s.actualTokens == s.charged) && s.slot == "" && s.quota == nil && s.spend == nil {
		return // nothing held
	}
	err := os.settleAll(ctx, s)
	for i := 0; err != nil && errors.Is(err, errBackend) && i < 2; i++ {
		time.Sleep(time.Duration(25<<i) * time.Millisecond)
		err = os.settleAll(ctx, s)
	}
	if err == nil {
		return
	}
	for _, part := range []struct {
		what string
		on   bool
	}{{"rates", s.tpm > 0 && s.actualTokens != s.charged}, {"concurrency", s.slot != ""}, {"quota", s.quota != nil}, {"spend", s.spend != nil}} {
		if part.on && errors.Is(err, errBackend) {
			g.m.backendErrors.WithLabelValues(part.what).Inc()
		}
	}
	g.log.WarnContext(ctx, "gateway: settling admission failed", "what", "all", "err", err)
}
