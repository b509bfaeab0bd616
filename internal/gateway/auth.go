package gateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// AuthCacheTTL is the default of config.Gateway.AuthCacheTTL: how long an authenticated key and
// its tenant are reused from memory before the store is read again. It bounds how long a
// revocation or a limit change made elsewhere (the CLI, another gateway replica) takes to apply.
const AuthCacheTTL = 5 * time.Second

// authCacheSize bounds the keys held in memory; beyond it the least recently used are dropped.
const authCacheSize = 8192

// TouchInterval is the least time between two writes of a key's last_used_at: a key in use is
// written about once a minute, not once per request.
const TouchInterval = time.Minute

// OpenAI's 401 wording (the key itself is never echoed, not even masked).
var (
	errNoKey = openai.Unauthorized("You didn't provide an API key. You need to provide your API key in an " +
		"Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or in an x-api-key header.")
	errBadKey = openai.Unauthorized("Incorrect API key provided.")
	// errAuthUnavailable answers a store failure during authentication: the client may retry.
	errAuthUnavailable = &openai.Error{Status: http.StatusServiceUnavailable, Type: openai.TypeUnavailable,
		Message: "The service is temporarily unable to authenticate requests; retry later."}
)

// principal is an authenticated caller: the key, its tenant, and what is derived from them.
type principal struct {
	key        *store.APIKey
	tenant     *store.Tenant
	fairnessID string
	policy     policy       // effective policy of the key (tier <- tenant <- key)
	fetched    time.Time    // when key and tenant were read from the store
	lastUsed   atomic.Int64 // Unix ms of the last last_used_at write known to this process
}

// authenticator resolves API keys to principals: HMAC the key, look the hash up (memory, then
// store), compare in constant time, refuse revoked keys.
type authenticator struct {
	st     *store.Store
	secret []byte
	clk    clock.PassiveClock
	log    *slog.Logger
	cache  *lru.Cache[string, *principal] // by hash, never by key
	ttl    time.Duration                  // 0: every request reads the store
	// failures counts refused authentications by reason ("missing", "invalid", "revoked",
	// "expired").
	failures func(reason string)
	cfg      *config.Gateway // tiers, for resolvePolicy
	touches  *toucher        // nil: last_used_at written inline (at most once per TouchInterval)
	audit    *authAuditor    // nil: refusals are only counted
}

// refuse counts and audits (coalesced) one refused authentication.
func (a *authenticator) refuse(reason string) {
	a.failures(reason)
	a.audit.refused(reason, a.clk.Now())
}

func newAuthenticator(st *store.Store, secret []byte, ttl time.Duration, clk clock.PassiveClock, log *slog.Logger, failures func(string)) *authenticator {
	c, _ := lru.New[string, *principal](authCacheSize) // errors only for a size <= 0
	return &authenticator{st: st, secret: secret, ttl: ttl, clk: clk, log: log, cache: c, failures: failures, cfg: &config.Gateway{}}
}

// authenticate returns the principal of the request's key, or the *openai.Error to answer:
// 401 for a missing, unknown, malformed, revoked or expired key (all but the first with one
// body, so a caller cannot tell them apart; the reason is counted and audited, coalesced), 503
// when the store cannot be read. A key rotated away keeps working until its grace period ends
// (its revoked_at).
func (a *authenticator) authenticate(ctx context.Context, h http.Header) (*principal, error) {
	key, present := keyFromHeaders(h)
	if !present {
		a.refuse("missing")
		return nil, errNoKey
	}
	if key == "" {
		a.refuse("invalid")
		return nil, errBadKey
	}
	hash := hashKey(a.secret, key)
	now := a.clk.Now()
	p, ok := a.cache.Get(string(hash))
	if !ok || now.Sub(p.fetched) >= a.ttl || now.Before(p.fetched) {
		k, t, err := a.st.APIKeyByHash(ctx, hash)
		if errors.Is(err, store.ErrNotFound) {
			a.cache.Remove(string(hash))
			a.refuse("invalid")
			return nil, errBadKey
		}
		if err != nil {
			a.log.ErrorContext(ctx, "gateway: authentication lookup failed", "err", err)
			return nil, errAuthUnavailable
		}
		np := &principal{key: k, tenant: t, fetched: now, policy: resolvePolicy(a.cfg, t, k)}
		np.fairnessID = principalFairnessID(a.secret, np.policy.fairness, t, k)
		np.lastUsed.Store(k.LastUsedAt.UnixMilli())
		if ok {
			// Keep what this process already wrote, in case the store lags behind it.
			np.lastUsed.Store(max(np.lastUsed.Load(), p.lastUsed.Load()))
		}
		p = np
		a.cache.Add(string(hash), p)
	}
	// The lookup matched on the hash; compare it again in constant time so that nothing about
	// the stored hash leaks through timing even if the lookup path did not compare bytes exactly.
	if subtle.ConstantTimeCompare(p.key.Hash, hash) != 1 {
		a.refuse("invalid")
		return nil, errBadKey
	}
	if p.key.Revoked(now) {
		a.refuse("revoked")
		return nil, errBadKey
	}
	if p.key.Expired(now) {
		a.refuse("expired")
		return nil, errBadKey
	}
	a.touch(ctx, p, now)
	return p, nil
}

// touch records a use of the key when the last known write is TouchInterval old: the CAS lets
// one request of a burst through, and the write itself is behind (toucher: batched, off the
// request path). A failed write is logged and otherwise ignored: last_used_at is informational
// and must not fail a request.
func (a *authenticator) touch(ctx context.Context, p *principal, now time.Time) {
	last := p.lastUsed.Load()
	if now.UnixMilli()-last < TouchInterval.Milliseconds() || !p.lastUsed.CompareAndSwap(last, now.UnixMilli()) {
		return
	}
	if a.touches != nil {
		a.touches.touch(p.key.ID, now)
		return
	}
	if err := a.st.TouchAPIKey(context.WithoutCancel(ctx), p.key.ID, now); err != nil {
		a.log.WarnContext(ctx, "gateway: updating last_used_at failed", "key_id", p.key.ID, "err", err)
	}
}
