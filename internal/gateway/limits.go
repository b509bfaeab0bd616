package gateway

import (
	"math"
	"math/bits"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/openai"
)

// Rate limits: per tenant, requests per minute and tokens per minute, each a GCRA (generic cell
// rate algorithm, ITU-T I.371; the semantics of redis_rate and of golang.org/x/time/rate with
// burst = limit). A limit L per minute has emission interval T = 1m/L and tolerance 1m, so a
// tenant may spend the whole minute's allowance at once and then L per minute evenly. The only
// state is the theoretical arrival time (TAT) per bucket: a request of cost n at time now is
// admitted iff max(TAT, now) + n*T - now <= 1m, and then TAT moves to max(TAT, now) + n*T.

const window = time.Minute

// bucket is one GCRA: its state is the theoretical arrival time.
type bucket struct{ tat time.Time }

// interval is n emissions of a limit per minute, exact (no rounding of T) and saturating.
func interval(n int64, limit int) time.Duration {
	if n <= 0 || limit <= 0 {
		return 0
	}
	return time.Duration(mulDiv(n, int64(window), int64(limit)))
}

// mulDiv is a*b/c for non-negative a, b and positive c, rounded down, with a 128-bit
// intermediate product; a quotient beyond int64 saturates at math.MaxInt64.
func mulDiv(a, b, c int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi >= uint64(c) {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, uint64(c))
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// verdict is the state of one bucket after an admission attempt, for the x-ratelimit-* headers.
type verdict struct {
	limit     int
	remaining int           // what may still be spent at once
	reset     time.Duration // until the bucket is full again
	retry     time.Duration // until this request would fit; 0 when admitted
}

// peek computes the verdict of spending n at now without changing the bucket, and the new TAT.
func (b *bucket) peek(now time.Time, n int64, limit int) (verdict, time.Time) {
	tat := b.tat
	if tat.Before(now) {
		tat = now
	}
	newTAT := tat.Add(interval(n, limit))
	v := verdict{limit: limit}
	if over := newTAT.Sub(now) - window; over > 0 {
		v.retry = over
		newTAT = tat // rejected: nothing is spent
	}
	v.reset = newTAT.Sub(now)
	// Debt from an overrun settled earlier can push reset past the window: nothing remains.
	v.remaining = int(mulDiv(max(0, int64(window-v.reset)), int64(limit), int64(window)))
	return v, newTAT
}

// tenantBuckets are one tenant's request and token buckets.
type tenantBuckets struct {
	requests, tokens bucket
}

// limiter holds the buckets of every tenant, in memory. One gateway replica only: several
// replicas need the shared (Redis) backend of issue 5.
type limiter struct {
	clk     clock.PassiveClock
	mu      sync.Mutex
	tenants map[string]*tenantBuckets // by tenant id; bounded by the number of tenants
}

func newLimiter(clk clock.PassiveClock) *limiter {
	return &limiter{clk: clk, tenants: map[string]*tenantBuckets{}}
}

// admission is the outcome of admit: what to answer in headers, and what to settle later.
type admission struct {
	requests, tokens verdict // limit 0: that limit is off
	// charged is the token estimate spent from the token bucket, to settle against actual usage.
	charged int64
	// rejected names the limit that refused the request ("requests" or "tokens"), "" if admitted.
	rejected string
	// tooLarge: the request alone exceeds the token limit and can never be admitted.
	tooLarge bool
}

// admit spends one request and `tokens` tokens of the tenant's buckets, or nothing when either
// limit refuses. rpm or tpm 0 turns that limit off. A token estimate above tpm is capped at tpm
// (the request is admitted against a full bucket and settles the rest as debt) unless strict,
// when it is refused outright, as OpenAI refuses a request larger than the TPM limit.
func (l *limiter) admit(tenantID string, rpm, tpm int, tokens int64, strict bool) admission {
	var a admission
	tooLarge := tpm > 0 && tokens > int64(tpm)
	if tooLarge {
		tokens = int64(tpm)
	}
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tb := l.tenants[tenantID]
	if tb == nil {
		tb = &tenantBuckets{}
		l.tenants[tenantID] = tb
	}
	var reqTAT, tokTAT time.Time
	if rpm > 0 {
		a.requests, reqTAT = tb.requests.peek(now, 1, rpm)
	}
	if tpm > 0 {
		a.tokens, tokTAT = tb.tokens.peek(now, tokens, tpm)
	}
	// A refused request spends nothing: the headers then show each bucket as it stands, with the
	// refusing limit's retry.
	switch {
	case a.requests.retry > 0:
		a.rejected = "requests"
		if tpm > 0 {
			a.tokens, _ = tb.tokens.peek(now, 0, tpm)
		}
	case tooLarge && strict:
		a.rejected, a.tooLarge = "tokens", true
		if rpm > 0 {
			a.requests, _ = tb.requests.peek(now, 0, rpm)
		}
		a.tokens, _ = tb.tokens.peek(now, 0, tpm) // never admissible: no retry to wait for
	case a.tokens.retry > 0:
		a.rejected = "tokens"
		if rpm > 0 {
			a.requests, _ = tb.requests.peek(now, 0, rpm)
		}
	default:
		if rpm > 0 {
			tb.requests.tat = reqTAT
		}
		if tpm > 0 {
			tb.tokens.tat = tokTAT
			a.charged = tokens
		}
	}
	return a
}

// settle corrects the tenant's token bucket by actual-charged tokens once the engine has reported
// usage: a refund moves TAT back (never below now, where it would grant more than the burst),
// an overrun moves it forward and is paid by later requests.
func (l *limiter) settle(tenantID string, tpm int, charged, actual int64) {
	if tpm <= 0 || actual == charged {
		return
	}
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tb := l.tenants[tenantID]
	if tb == nil {
		return
	}
	if actual > charged {
		base := tb.tokens.tat
		if base.Before(now) {
			base = now
		}
		tb.tokens.tat = base.Add(interval(actual-charged, tpm))
		return
	}
	tb.tokens.tat = tb.tokens.tat.Add(-interval(charged-actual, tpm))
	if tb.tokens.tat.Before(now) {
		tb.tokens.tat = now
	}
}

// setHeaders writes OpenAI's x-ratelimit-* headers for the limits that are on
// (https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers).
func (a *admission) setHeaders(h http.Header) {
	if v := a.requests; v.limit > 0 {
		h.Set(openai.HeaderLimitRequests, strconv.Itoa(v.limit))
		h.Set(openai.HeaderRemainingRequests, strconv.Itoa(v.remaining))
		h.Set(openai.HeaderResetRequests, formatReset(v.reset))
	}
	if v := a.tokens; v.limit > 0 {
		h.Set(openai.HeaderLimitTokens, strconv.Itoa(v.limit))
		h.Set(openai.HeaderRemainingTokens, strconv.Itoa(v.remaining))
		h.Set(openai.HeaderResetTokens, formatReset(v.reset))
	}
}

// retryAfter is the delay until the refused request would be admitted.
func (a *admission) retryAfter() time.Duration {
	if a.rejected == "requests" {
		return a.requests.retry
	}
	return a.tokens.retry
}

// formatReset renders a duration as OpenAI does in x-ratelimit-reset-*: Go duration syntax
// ("6m0s", "1s", "120ms"), rounded up to whole milliseconds so it never promises too early.
func formatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return (d + time.Millisecond - 1).Truncate(time.Millisecond).String()
}

// retryAfterSeconds is the retry-after header value (RFC 9110 §10.2.3): whole seconds, rounded
// up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// rateLimitError is the 429 for a refused admission, worded as OpenAI's
// ("Rate limit reached for gpt-4 in organization org-x on requests per min (RPM): Limit 3,
// Used 3, Requested 1. Please try again in 20s."), with error.type "requests" or "tokens" and
// code rate_limit_exceeded as OpenAI sends them.
func rateLimitError(model string, a *admission, requested int64) *openai.Error {
	e := &openai.Error{Status: http.StatusTooManyRequests, Type: a.rejected, Code: openai.CodeRateLimitExceeded}
	switch {
	case a.tooLarge:
		e.Message = "Request too large for " + model + " on tokens per min (TPM): Limit " + strconv.Itoa(a.tokens.limit) +
			", Requested " + strconv.FormatInt(requested, 10) + ". The input or output tokens must be reduced in order to run successfully."
	case a.rejected == "requests":
		v := a.requests
		e.Message = "Rate limit reached for " + model + " on requests per min (RPM): Limit " + strconv.Itoa(v.limit) +
			", Used " + strconv.Itoa(v.limit-v.remaining) + ", Requested 1. Please try again in " + formatReset(v.retry) + "."
	default:
		v := a.tokens
		e.Message = "Rate limit reached for " + model + " on tokens per min (TPM): Limit " + strconv.Itoa(v.limit) +
			", Used " + strconv.Itoa(v.limit-v.remaining) + ", Requested " + strconv.FormatInt(requested, 10) +
			". Please try again in " + formatReset(v.retry) + "."
	}
	return e
}
