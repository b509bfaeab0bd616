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
	// ModelGroups names sets of models; a policy's models list may name a group as "@name".
	// Default none.
	ModelGroups map[string][]string `json:"model_groups"`
	// SLO holds the latency targets per tier that strata_gateway_slo_violations_total counts
	// against.
	SLO SLO `json:"slo"`
	// IOLog configures the opt-in per-tenant request/response log.
	IOLog IOLog `json:"iolog"`
	// Ledger tunes the group-commit writer of usage records.
	Ledger Ledger `json:"ledger"`
	// Export delivers every usage record as a CloudEvent to a webhook or an NDJSON file.
	Export Export `json:"export"`
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

// SLOTarget is one tier's latency objectives; 0 disables a check.
type SLOTarget struct {
	// TTFT is the most time to the first token (streams) or to the response headers (non-stream).
	TTFT Duration `json:"ttft"`
	// E2E is the most time for the whole request.
	E2E Duration `json:"e2e"`
}

// SLO is the latency objectives of the gateway: Default for tiers without their own entry.
type SLO struct {
	// Default applies to every tier not in Tiers (and to tenants without a tier). Default
	// ttft 2s, e2e 60s.
	Default SLOTarget `json:"default"`
	// Tiers overrides Default per tier name, field by field (a 0 field inherits Default's).
	Tiers map[string]SLOTarget `json:"tiers"`
}

// Target returns the SLO target of tier: its own fields, else Default's.
func (s *SLO) Target(tier string) SLOTarget {
	t, ok := s.Tiers[tier]
	if !ok {
		return s.Default
	}
	if t.TTFT == 0 {
		t.TTFT = s.Default.TTFT
	}
	if t.E2E == 0 {
		t.E2E = s.Default.E2E
	}
	return t
}

// IOLog configures the I/O log: request and response bodies of tenants that opted in
// (tenant flag, admin API / `strata tenants iolog`), kept in their own table.
type IOLog struct {
	// RetentionDays is how long entries are kept; older ones are purged. Default 30.
	RetentionDays int `json:"retention_days"`
	// PurgeInterval is how often expired entries are deleted. Default 1h.
	PurgeInterval Duration `json:"purge_interval"`
	// Redact are extra regular expressions (RE2) whose matches are replaced by "[REDACTED]"
	// before a body is stored, after the defaults (e-mail addresses, payment card numbers).
	Redact []string `json:"redact"`
	// NoDefaultRedaction turns the default patterns off (only Redact applies).
	NoDefaultRedaction bool `json:"no_default_redaction"`
	// MaxBodyBytes bounds each stored body; longer ones are cut. Default 1 MiB.
	MaxBodyBytes int `json:"max_body_bytes"`
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
	// Fairness chooses the flow sent down as x-gateway-inference-fairness-id: "tenant" (one flow
	// per tenant, the default) or "key" (one flow per API key).
	Fairness *string `json:"fairness,omitempty"`
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
	if p.Fairness != nil && *p.Fairness != "" && *p.Fairness != "tenant" && *p.Fairness != "key" {
		return fmt.Errorf("fairness: %q: want tenant or key", *p.Fairness)
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
	if o.Fairness != nil {
		p.Fairness = o.Fairness
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
	if err := g.validatePolicyPlane(); err != nil {
		return err
	}
	if err := g.validateMetering(); err != nil {
		return err
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
		SLO:             SLO{Default: SLOTarget{TTFT: Duration(2 * time.Second), E2E: Duration(60 * time.Second)}},
		IOLog:           IOLog{RetentionDays: 30, PurgeInterval: Duration(time.Hour), MaxBodyBytes: 1 << 20},
		Ledger:          defaultLedger(),
		Export:          defaultExport(),
		Admission: Admission{Backend: "memory", RedisURL: "redis://127.0.0.1:6379/0", KeyPrefix: "strata:gw:",
			ReservationTTL: Duration(10 * time.Minute)}}
}

// validatePolicyPlane checks the model groups, SLO and I/O log settings.
func (g *Gateway) validatePolicyPlane() error {
	groups := make([]string, 0, len(g.ModelGroups))
	for name := range g.ModelGroups {
		groups = append(groups, name)
	}
	sort.Strings(groups)
	for _, name := range groups {
		if !objectiveName.MatchString(name) {
			return fmt.Errorf("model_groups: %q is not a name of 1 to 63 letters, digits, '.', '_' or '-'", name)
		}
		if len(g.ModelGroups[name]) == 0 {
			return fmt.Errorf("model_groups.%s: must list at least one model", name)
		}
		for _, m := range g.ModelGroups[name] {
			if m == "" || len(m) > 256 || m[0] == '@' {
				return fmt.Errorf("model_groups.%s: model name %q: want 1 to 256 bytes, not a group", name, m)
			}
		}
	}
	check := func(where string, t SLOTarget) error {
		if t.TTFT < 0 {
			return fmt.Errorf("%s.ttft: must not be negative, got %s", where, t.TTFT.D())
		}
		if t.E2E < 0 {
			return fmt.Errorf("%s.e2e: must not be negative, got %s", where, t.E2E.D())
		}
		return nil
	}
	if err := check("slo.default", g.SLO.Default); err != nil {
		return err
	}
	tiers := make([]string, 0, len(g.SLO.Tiers))
	for name := range g.SLO.Tiers {
		tiers = append(tiers, name)
	}
	sort.Strings(tiers)
	for _, name := range tiers {
		if err := check("slo.tiers."+name, g.SLO.Tiers[name]); err != nil {
			return err
		}
	}
	if g.IOLog.RetentionDays < 1 || g.IOLog.RetentionDays > 3650 {
		return fmt.Errorf("iolog.retention_days: must be between 1 and 3650, got %d", g.IOLog.RetentionDays)
	}
	if g.IOLog.PurgeInterval <= 0 {
		return fmt.Errorf("iolog.purge_interval: must be positive, got %s", g.IOLog.PurgeInterval.D())
	}
	if g.IOLog.MaxBodyBytes < 1 {
		return fmt.Errorf("iolog.max_body_bytes: must be positive, got %d", g.IOLog.MaxBodyBytes)
	}
	for i, re := range g.IOLog.Redact {
		if _, err := regexp.Compile(re); err != nil {
			return fmt.Errorf("iolog.redact[%d]: %w", i, err)
		}
	}
	return nil
}

// Ledger tunes the usage ledger's group-commit writer: the usage records of concurrent requests
// are written in one transaction, and each request waits for the commit of its batch before the
// end of its answer is sent (key gateway.ledger).
type Ledger struct {
	// MaxBatch is the most records committed in one transaction. Default 256.
	MaxBatch int `json:"max_batch"`
	// MaxDelay is how long the writer waits for more records before committing a batch that is
	// not full. 0 (the default) commits as soon as the previous commit is done, with whatever
	// arrived meanwhile: batches grow with load and an idle request waits for one commit only.
	MaxDelay Duration `json:"max_delay"`
	// WriteTimeout bounds how long a request waits for its record to commit; after it the request
	// is answered as a storage failure. Default 10s.
	WriteTimeout Duration `json:"write_timeout"`
}

func defaultLedger() Ledger {
	return Ledger{MaxBatch: 256, WriteTimeout: Duration(10 * time.Second)}
}

// Export sinks.
const (
	ExportSinkNone    = ""
	ExportSinkWebhook = "webhook"
	ExportSinkFile    = "file"
)

// Export configures the CloudEvents export of usage records (key gateway.export): each record is
// written with its event to an outbox in the same transaction, and delivered at least once
// (consumers deduplicate on the event id, the record's request id).
type Export struct {
	// Sink is "" (no export, the default), "webhook" (POST each event to URL as
	// application/cloudevents+json) or "file" (append each event as one JSON line to File).
	Sink string `json:"sink"`
	// URL is the webhook's http:// or https:// URL (sink webhook).
	URL string `json:"url"`
	// File is the NDJSON file events are appended to (sink file); created 0600.
	File string `json:"file"`
	// Source is the CloudEvents "source" attribute, a URI-reference. Default "/strata/gateway".
	Source string `json:"source"`
	// MaxAttempts is how many deliveries of an event are tried before it is dead-lettered (kept
	// in the outbox with dead_at set). Default 8.
	MaxAttempts int `json:"max_attempts"`
	// InitialBackoff is the wait after the first failed delivery; each further failure doubles
	// it, up to MaxBackoff. Defaults 1s and 5m.
	InitialBackoff Duration `json:"initial_backoff"`
	MaxBackoff     Duration `json:"max_backoff"`
	// PollInterval is how often the outbox is read for due events when no new record woke the
	// exporter. Default 1s.
	PollInterval Duration `json:"poll_interval"`
	// Timeout bounds one webhook delivery. Default 10s.
	Timeout Duration `json:"timeout"`
	// BatchSize is the most events read from the outbox at once. Default 100.
	BatchSize int `json:"batch_size"`
}

func defaultExport() Export {
	return Export{Source: "/strata/gateway", MaxAttempts: 8, InitialBackoff: Duration(time.Second),
		MaxBackoff: Duration(5 * time.Minute), PollInterval: Duration(time.Second), Timeout: Duration(10 * time.Second), BatchSize: 100}
}

// validateMetering checks the ledger and export settings.
func (g *Gateway) validateMetering() error {
	l := &g.Ledger
	if l.MaxBatch < 1 || l.MaxBatch > 10000 {
		return fmt.Errorf("ledger.max_batch: must be between 1 and 10000, got %d", l.MaxBatch)
	}
	if l.MaxDelay < 0 || l.MaxDelay.D() > time.Second {
		return fmt.Errorf("ledger.max_delay: must be between 0 and 1s, got %s", l.MaxDelay.D())
	}
	if l.WriteTimeout <= 0 {
		return fmt.Errorf("ledger.write_timeout: must be positive, got %s", l.WriteTimeout.D())
	}
	e := &g.Export
	switch e.Sink {
	case ExportSinkNone:
		return nil
	case ExportSinkWebhook:
		if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("export.url: %q is not an http:// or https:// URL", e.URL)
		}
	case ExportSinkFile:
		if e.File == "" {
			return fmt.Errorf("export.file: must be set with sink file")
		}
	default:
		return fmt.Errorf("export.sink: unknown sink %q (want webhook or file)", e.Sink)
	}
	if _, err := url.Parse(e.Source); err != nil || e.Source == "" {
		return fmt.Errorf("export.source: %q is not a URI-reference", e.Source)
	}
	if e.MaxAttempts < 1 || e.MaxAttempts > 1000 {
		return fmt.Errorf("export.max_attempts: must be between 1 and 1000, got %d", e.MaxAttempts)
	}
	if e.InitialBackoff <= 0 || e.MaxBackoff < e.InitialBackoff {
		return fmt.Errorf("export.initial_backoff: must be positive and at most max_backoff, got %s and %s", e.InitialBackoff.D(), e.MaxBackoff.D())
	}
	if e.PollInterval <= 0 {
		return fmt.Errorf("export.poll_interval: must be positive, got %s", e.PollInterval.D())
	}
	if e.Timeout <= 0 {
		return fmt.Errorf("export.timeout: must be positive, got %s", e.Timeout.D())
	}
	if e.BatchSize < 1 || e.BatchSize > 10000 {
		return fmt.Errorf("export.batch_size: must be between 1 and 10000, got %d", e.BatchSize)
	}
	return nil
}
