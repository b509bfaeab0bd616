package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"time"
)

// Gateway configures the tenant plane.
type Gateway struct {
	// KeySecretFile holds the server secret that API keys are HMAC-SHA-256 hashed with. Created
	// with 32 random bytes (mode 0600) on first start. Default <data_dir>/key-secret.
	KeySecretFile string `json:"key_secret_file"`
	// DevTenant is created with a key on first start when no tenant exists. Default "dev";
	// "" disables it.
	DevTenant *string `json:"dev_tenant"`
	// DevRPM and DevTPM are the development tenant's limits (0 = unlimited). Default 600 / 1000000.
	DevRPM *int `json:"dev_rpm"`
	DevTPM *int `json:"dev_tpm"`
	// AuthCacheTTL is how long a gateway reuses an authenticated key and its tenant before reading
	// the store again: the longest a revocation or limit change made elsewhere (the CLI, another
	// gateway replica) takes to apply. 0 reads the store on every request. Default 5s.
	AuthCacheTTL Duration `json:"auth_cache_ttl"`

	// Tiers are the named policies tenants are assigned to (tenants.tier); a tenant's and a key's
	// own policy override their tier field by field. Default none.
	Tiers map[string]Policy `json:"tiers"`
	// DefaultTier is the tier of tenants that name none (or name one not configured). "" = no
	// tier: only the tenant's and key's own policy apply. Must name a tier of Tiers.
	DefaultTier string `json:"default_tier"`
	// BillingTimeZone is the IANA time zone whose calendar months bound monthly token quotas,
	// spend caps and `strata usage` periods. Default "UTC".
	BillingTimeZone string `json:"billing_time_zone"`
	// Admission selects where rate, concurrency, quota and spend state is kept.
	Admission Admission `json:"admission"`
}

// Admission configures the admission backend of the gateway.
type Admission struct {
	// Backend is "memory" (one gateway process) or "redis" (state shared by every gateway replica
	// using the same Redis). Default "memory".
	Backend string `json:"backend"`
	// RedisURL is the Redis to use with backend "redis", as redis://[user:pass@]host:port/db
	// (go-redis ParseURL). Default "redis://127.0.0.1:6379/0".
	RedisURL string `json:"redis_url"`
	// KeyPrefix starts every Redis key the gateway writes. Default "strata:gw:".
	KeyPrefix string `json:"key_prefix"`
	// ReservationTTL is how long a quota/spend reservation or a concurrency slot of a request
	// lives without being settled: after it, a reservation left by a crashed gateway is dropped.
	// It must exceed the longest request. Default 10m.
	ReservationTTL Duration `json:"reservation_ttl"`
	// FailOpen says, per limit, whether a request is admitted when Redis cannot be reached:
	// keys "rates" (rpm, tpm), "concurrency", "quota" (monthly tokens), "spend" (monthly
	// spend). Default rates and concurrency open, quota and spend closed.
	FailOpen map[string]bool `json:"fail_open"`
}

// FailOpenLimits are the keys of Admission.FailOpen.
var FailOpenLimits = []string{"rates", "concurrency", "quota", "spend"}

// Policy is the limits and routing policy of a tier, or a tenant's or key's override of it.
// Every field is optional: nil (or an absent models list) inherits from the level below
// (tier <- tenant <- key); a limit of 0 means unlimited. Money is integer micro-USD.
type Policy struct {
	// Models is the model allowlist; ["*"] allows every model. Absent inherits; a tier that sets
	// none allows every model.
	Models []string `json:"models,omitempty"`
	// RPM and TPM are requests and tokens (prompt + completion) per minute, GCRA with burst = the
	// per-minute limit.
	RPM *int64 `json:"rpm,omitempty"`
	TPM *int64 `json:"tpm,omitempty"`
	// MaxConcurrent is the most requests in flight at once.
	MaxConcurrent *int64 `json:"max_concurrent,omitempty"`
	// MonthlyTokens is the token quota (prompt + completion) per calendar month in
	// BillingTimeZone.
	MonthlyTokens *int64 `json:"monthly_tokens,omitempty"`
	// MonthlySpendMicros is the spend cap per calendar month, in micro-USD, rated with the price
	// book.
	MonthlySpendMicros *int64 `json:"monthly_spend_micros,omitempty"`
	// MaxTokensDefault is the max_tokens sent down for a request that sets no output limit.
	MaxTokensDefault *int64 `json:"max_tokens_default,omitempty"`
	// MaxTokensCap is the largest output limit a request may ask for; above it the request is
	// refused with 400.
	MaxTokensCap *int64 `json:"max_tokens_cap,omitempty"`
	// Objective is the inference objective name sent down as x-gateway-inference-objective (the
	// router maps it to a priority). "" sends none.
	Objective *string `json:"objective,omitempty"`
}

// maxPolicyValue bounds every numeric policy field: far above any real limit, far below where
// sums of them could overflow int64.
const maxPolicyValue = int64(1) << 50

var objectiveName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks every set field: numbers in [0, 2^50], max_tokens_default <= max_tokens_cap
// when both are set and non-zero, model names 1 to 256 bytes, objective a name of 1 to 63
// letters, digits, '.', '_' or '-'. The error names the field (its JSON name).
func (p *Policy) Validate() error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"rpm", p.RPM}, {"tpm", p.TPM}, {"max_concurrent", p.MaxConcurrent}, {"monthly_tokens", p.MonthlyTokens},
		{"monthly_spend_micros", p.MonthlySpendMicros}, {"max_tokens_default", p.MaxTokensDefault}, {"max_tokens_cap", p.MaxTokensCap}} {
		if f.v != nil && (*f.v < 0 || *f.v > maxPolicyValue) {
			return fmt.Errorf("%s: must be between 0 and %d, got %d", f.name, maxPolicyValue, *f.v)
		}
	}
	if p.MaxTokensDefault != nil && p.MaxTokensCap != nil && *p.MaxTokensCap > 0 && *p.MaxTokensDefault > *p.MaxTokensCap {
		return fmt.Errorf("max_tokens_default: %d is above max_tokens_cap %d", *p.MaxTokensDefault, *p.MaxTokensCap)
	}
	for _, m := range p.Models {
		if m == "" || len(m) > 256 {
			return fmt.Errorf("models: model name %q: want 1 to 256 bytes", m)
		}
	}
	if p.Objective != nil && *p.Objective != "" && !objectiveName.MatchString(*p.Objective) {
		return fmt.Errorf("objective: %q is not a name of 1 to 63 letters, digits, '.', '_' or '-'", *p.Objective)
	}
	return nil
}

// Over returns p with every field that o sets replaced by o's: o overrides p.
func (p Policy) Over(o Policy) Policy {
	if o.Models != nil {
		p.Models = slices.Clone(o.Models)
	}
	for _, f := range []struct{ dst, src **int64 }{{&p.RPM, &o.RPM}, {&p.TPM, &o.TPM}, {&p.MaxConcurrent, &o.MaxConcurrent},
		{&p.MonthlyTokens, &o.MonthlyTokens}, {&p.MonthlySpendMicros, &o.MonthlySpendMicros},
		{&p.MaxTokensDefault, &o.MaxTokensDefault}, {&p.MaxTokensCap, &o.MaxTokensCap}} {
		if *f.src != nil {
			*f.dst = *f.src
		}
	}
	if o.Objective != nil {
		p.Objective = o.Objective
	}
	return p
}

// Location returns the billing time zone (UTC when unset).
func (g *Gateway) Location() (*time.Location, error) {
	if g.BillingTimeZone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(g.BillingTimeZone)
}

func (g *Gateway) validate() error {
	if g.AuthCacheTTL < 0 {
		return fmt.Errorf("auth_cache_ttl: must not be negative, got %s", g.AuthCacheTTL.D())
	}
	for _, v := range []struct {
		name string
		v    *int
	}{{"dev_rpm", g.DevRPM}, {"dev_tpm", g.DevTPM}} {
		if v.v != nil && *v.v < 0 {
			return fmt.Errorf("%s: must not be negative, got %d", v.name, *v.v)
		}
	}
	names := make([]string, 0, len(g.Tiers))
	for name := range g.Tiers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !objectiveName.MatchString(name) {
			return fmt.Errorf("tiers: %q is not a name of 1 to 63 letters, digits, '.', '_' or '-'", name)
		}
		p := g.Tiers[name]
		if err := p.Validate(); err != nil {
			return fmt.Errorf("tiers.%s.%w", name, err)
		}
	}
	if _, ok := g.Tiers[g.DefaultTier]; g.DefaultTier != "" && !ok {
		return fmt.Errorf("default_tier: %q is not a configured tier", g.DefaultTier)
	}
	if _, err := g.Location(); err != nil {
		return fmt.Errorf("billing_time_zone: %q: %w", g.BillingTimeZone, err)
	}
	a := &g.Admission
	switch a.Backend {
	case "memory":
	case "redis":
		if u, err := url.Parse(a.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return fmt.Errorf("admission.redis_url: %q is not a redis:// or rediss:// URL", a.RedisURL)
		}
	default:
		return fmt.Errorf("admission.backend: unknown backend %q (want memory or redis)", a.Backend)
	}
	if a.ReservationTTL <= 0 {
		return fmt.Errorf("admission.reservation_ttl: must be positive, got %s", a.ReservationTTL.D())
	}
	for k := range a.FailOpen {
		if !slices.Contains(FailOpenLimits, k) {
			return fmt.Errorf("admission.fail_open: unknown limit %q (want rates, concurrency, quota or spend)", k)
		}
	}
	return nil
}

// FailsOpen reports whether limit (one of FailOpenLimits) admits requests while the admission
// backend is unreachable: the configured value, else open for rates and concurrency and closed
// for quota and spend.
func (a *Admission) FailsOpen(limit string) bool {
	if v, ok := a.FailOpen[limit]; ok {
		return v
	}
	return limit == "rates" || limit == "concurrency"
}

func defaultGateway() Gateway {
	return Gateway{DevTenant: ptr("dev"), DevRPM: ptr(600), DevTPM: ptr(1_000_000), AuthCacheTTL: Duration(5 * time.Second),
		BillingTimeZone: "UTC",
		Admission: Admission{Backend: "memory", RedisURL: "redis://127.0.0.1:6379/0", KeyPrefix: "strata:gw:",
			ReservationTTL: Duration(10 * time.Minute)}}
}
