package gateway

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// DefaultUsageLimit is how many usage records Admin.Usage returns when asked for limit <= 0.
const DefaultUsageLimit = 100

// Admin manages tenants and API keys and reads usage, for the CLI (strata tenants, keys, usage)
// and the stack's first start. It works on the store directly, so it may run in another process
// than the serving gateway; a running gateway sees changes within AuthCacheTTL. Errors wrap
// store.ErrNotFound and store.ErrExists where those apply; invalid arguments are plain errors
// naming the argument.
type Admin struct {
	st     *store.Store
	secret []byte
	now    func() time.Time
	actor  string // author of audit log entries; "" = DefaultActor
	// cfg is the gateway configuration when known (tiers, model groups, billing time zone);
	// nil: tenants are rated with their own tier name and months are UTC.
	cfg *config.Gateway
	// onChange, when set, is called after a tenant change (the serving gateway drops caches).
	onChange func()
}

// WithConfig returns a copy of a that knows the gateway configuration: its default tier rates
// tenants without a tier, its billing time zone bounds months, and policies naming an unknown
// tier or model group are refused.
func (a *Admin) WithConfig(cfg config.Gateway) *Admin {
	c := *a
	c.cfg = &cfg
	return &c
}

// location is the billing time zone (UTC without a configuration).
func (a *Admin) location() *time.Location {
	if a.cfg != nil {
		if loc, err := a.cfg.Location(); err == nil {
			return loc
		}
	}
	return time.UTC
}

// effectiveTier is the tier t is rated and limited under: its own when configured (or when no
// configuration is known), else the default tier.
func (a *Admin) effectiveTier(t *store.Tenant) string {
	if a.cfg == nil {
		return t.Tier
	}
	if _, ok := a.cfg.Tiers[t.Tier]; ok {
		return t.Tier
	}
	return a.cfg.DefaultTier
}

// NewAdmin returns an Admin over st; secret is the server secret keys are hashed with (the same
// as the gateway's, from LoadOrCreateSecret).
func NewAdmin(st *store.Store, secret []byte) *Admin {
	return &Admin{st: st, secret: secret, now: time.Now}
}

var tenantName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CreateTenant creates a tenant with the given limits (requests and tokens per minute, 0 =
// unlimited) and model allowlist (empty = every model; names are trimmed and deduplicated).
// The name is 1 to 64 characters of letters, digits, ".", "_" and "-", starting with a letter
// or digit. An existing name gives an error wrapping store.ErrExists.
func (a *Admin) CreateTenant(ctx context.Context, name string, rpm, tpm int, models []string) (*store.Tenant, error) {
	t, err := a.newTenant(name, rpm, tpm, models)
	if err != nil {
		return nil, err
	}
	if err := a.st.CreateTenant(ctx, t); err != nil {
		return nil, err
	}
	if err := a.audit(ctx, "tenant.create", name, map[string]any{"id": t.ID, "rpm": rpm, "tpm": tpm, "models": t.Models}); err != nil {
		return t, err
	}
	return t, nil
}

func (a *Admin) newTenant(name string, rpm, tpm int, models []string) (*store.Tenant, error) {
	if !tenantName.MatchString(name) {
		return nil, fmt.Errorf("gateway: tenant name %q: want 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	if rpm < 0 || tpm < 0 {
		return nil, fmt.Errorf("gateway: rpm and tpm must not be negative, got %d and %d", rpm, tpm)
	}
	var allow []string
	for _, m := range models {
		m = strings.TrimSpace(m)
		if m == "" || len(m) > 256 {
			return nil, fmt.Errorf("gateway: model name %q: want 1 to 256 characters", m)
		}
		if !slices.Contains(allow, m) {
			allow = append(allow, m)
		}
	}
	return &store.Tenant{ID: newID("ten"), Name: name, RPM: rpm, TPM: tpm, Models: allow, CreatedAt: a.now().UTC().Truncate(time.Millisecond)}, nil
}

// CreateKey creates an API key for the tenant named tenant and returns the key itself: the only
// time it exists outside the caller, since only its HMAC is stored. plaintext "" generates a key
// (GenerateKey); otherwise plaintext is the key (8 to 256 visible ASCII characters), for
// STRATA_DEV_API_KEY and scripted setups. An unknown tenant wraps store.ErrNotFound; a key that
// exists already wraps store.ErrExists.
func (a *Admin) CreateKey(ctx context.Context, tenant string, plaintext string) (string, *store.APIKey, error) {
	if tenant == "" {
		return "", nil, errors.New("gateway: a key needs a tenant")
	}
	id, err := a.tenantID(ctx, tenant)
	if err != nil {
		return "", nil, err
	}
	key, k, err := a.newKey(id, plaintext)
	if err != nil {
		return "", nil, err
	}
	if err := a.st.CreateAPIKey(ctx, k); err != nil {
		return "", nil, err
	}
	if err := a.audit(ctx, "key.create", k.ID, map[string]any{"tenant": tenant, "prefix": k.Prefix}); err != nil {
		return key, k, err
	}
	return key, k, nil
}

func (a *Admin) newKey(tenantID, plaintext string) (string, *store.APIKey, error) {
	key := plaintext
	if key == "" {
		key = GenerateKey()
	} else if err := checkKey(key); err != nil {
		return "", nil, err
	}
	return key, &store.APIKey{ID: newID("key"), TenantID: tenantID, Prefix: visiblePrefix(key),
		Hash: hashKey(a.secret, key), CreatedAt: a.now().UTC().Truncate(time.Millisecond)}, nil
}

// ListKeys returns the keys of the tenant named tenant ("" = all tenants), revoked ones
// included, oldest first. They carry their visible prefix, never the key.
func (a *Admin) ListKeys(ctx context.Context, tenant string) ([]store.APIKey, error) {
	id, err := a.tenantID(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return a.st.ListAPIKeys(ctx, id)
}

// RevokeKey revokes the key with the given ID ("key_..."); it is refused from then on (by a
// running gateway within AuthCacheTTL). Revoking twice is not an error; an unknown ID wraps
// store.ErrNotFound.
func (a *Admin) RevokeKey(ctx context.Context, id string) error {
	if err := a.st.RevokeAPIKey(ctx, id, a.now()); err != nil {
		return err
	}
	return a.audit(ctx, "key.revoke", id, map[string]any{})
}

// ListTenants returns every tenant, by name.
func (a *Admin) ListTenants(ctx context.Context) ([]store.Tenant, error) {
	return a.st.ListTenants(ctx)
}

// Usage returns the newest usage records of the tenant named tenant ("" = all tenants), at most
// limit of them (DefaultUsageLimit when limit <= 0).
func (a *Admin) Usage(ctx context.Context, tenant string, limit int) ([]store.UsageRecord, error) {
	id, err := a.tenantID(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultUsageLimit
	}
	return a.st.ListUsage(ctx, store.UsageFilter{TenantID: id, Limit: limit})
}

// EnsureDevTenant gives a fresh installation something to call: when no tenant exists at all,
// it creates the tenant `name` with the given limits and one key (plaintext, or generated when
// ""), both in one transaction, and returns the key with created=true. When any tenant exists
// it does nothing and returns "", false (also when another process won the race to create it).
func (a *Admin) EnsureDevTenant(ctx context.Context, name string, rpm, tpm int, plaintext string) (string, bool, error) {
	n, err := a.st.CountTenants(ctx)
	if err != nil || n > 0 {
		return "", false, err
	}
	t, err := a.newTenant(name, rpm, tpm, nil)
	if err != nil {
		return "", false, err
	}
	key, k, err := a.newKey(t.ID, plaintext)
	if err != nil {
		return "", false, err
	}
	if err := a.st.CreateTenant(ctx, t, k); err != nil {
		if errors.Is(err, store.ErrExists) {
			return "", false, nil
		}
		return "", false, err
	}
	if err := a.audit(ctx, "tenant.create", name, map[string]any{"id": t.ID, "rpm": rpm, "tpm": tpm, "dev": true, "key": k.ID}); err != nil {
		return key, true, err
	}
	return key, true, nil
}

// tenantID resolves a tenant name to its ID ("" stays "": all tenants).
func (a *Admin) tenantID(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	t, err := a.st.TenantByName(ctx, name)
	if err != nil {
		return "", fmt.Errorf("gateway: tenant %q: %w", name, err)
	}
	return t.ID, nil
}

// MaxGracePeriod bounds the grace period of a key rotation (30 days).
const MaxGracePeriod = 30 * 24 * time.Hour

// maxExternalIDLen bounds a tenant's external id.
const maxExternalIDLen = 256

// TenantSpec is a tenant to create: CreateTenant's arguments plus the optional fields.
type TenantSpec struct {
	Name       string
	ExternalID string
	Tier       string
	RPM, TPM   int
	Models     []string
	IOLog      bool
}

// CreateTenantSpec creates the tenant s (see CreateTenant for the name, limit and model rules;
// ExternalID 0 to 256 visible characters, unique when set; Tier a name as in SetTenantPolicy).
// An existing name or external id wraps store.ErrExists.
func (a *Admin) CreateTenantSpec(ctx context.Context, s TenantSpec) (*store.Tenant, error) {
	t, err := a.newTenant(s.Name, s.RPM, s.TPM, s.Models)
	if err != nil {
		return nil, err
	}
	if err := checkExternalID(s.ExternalID); err != nil {
		return nil, err
	}
	if s.Tier != "" && !tenantName.MatchString(s.Tier) {
		return nil, fmt.Errorf("gateway: tier %q: want 1 to 64 letters, digits, '.', '_' or '-'", s.Tier)
	}
	if err := a.checkConfigured(s.Tier, config.Policy{}); err != nil {
		return nil, err
	}
	t.ExternalID, t.Tier, t.IOLog = s.ExternalID, s.Tier, s.IOLog
	if err := a.st.CreateTenant(ctx, t); err != nil {
		return nil, err
	}
	if err := a.audit(ctx, "tenant.create", t.Name, map[string]any{"id": t.ID, "rpm": t.RPM, "tpm": t.TPM, "models": t.Models,
		"external_id": t.ExternalID, "tier": t.Tier, "iolog": t.IOLog}); err != nil {
		return t, err
	}
	return t, nil
}

func checkExternalID(id string) error {
	if len(id) > maxExternalIDLen {
		return fmt.Errorf("gateway: external id: want at most %d characters", maxExternalIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < ' ' || id[i] > '~' {
			return fmt.Errorf("gateway: external id: only visible ASCII characters and spaces")
		}
	}
	return nil
}

// Tenant returns the tenant named name (wrapping store.ErrNotFound when there is none).
func (a *Admin) Tenant(ctx context.Context, name string) (*store.Tenant, error) {
	t, err := a.st.TenantByName(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("gateway: tenant %q: %w", name, err)
	}
	return t, nil
}

// UpdateTenant changes the fields u sets of the tenant named name: external id (unique when set,
// "" clears it), rpm, tpm, models, iolog. An external id another tenant has wraps store.ErrExists.
func (a *Admin) UpdateTenant(ctx context.Context, name string, u store.TenantUpdate) (*store.Tenant, error) {
	if u.ExternalID != nil {
		if err := checkExternalID(*u.ExternalID); err != nil {
			return nil, err
		}
	}
	if (u.RPM != nil && *u.RPM < 0) || (u.TPM != nil && *u.TPM < 0) {
		return nil, errors.New("gateway: rpm and tpm must not be negative")
	}
	if u.Models != nil {
		t, err := a.newTenant("x", 0, 0, *u.Models) // the model list rules of CreateTenant
		if err != nil {
			return nil, err
		}
		models := t.Models
		if models == nil {
			models = []string{}
		}
		u.Models = &models
	}
	id, err := a.tenantID(ctx, name)
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, errors.New("gateway: an update needs a tenant")
	}
	t, err := a.st.UpdateTenant(ctx, id, u)
	if err != nil {
		return nil, err
	}
	detail := map[string]any{}
	if u.ExternalID != nil {
		detail["external_id"] = *u.ExternalID
	}
	if u.RPM != nil {
		detail["rpm"] = *u.RPM
	}
	if u.TPM != nil {
		detail["tpm"] = *u.TPM
	}
	if u.Models != nil {
		detail["models"] = *u.Models
	}
	if u.IOLog != nil {
		detail["iolog"] = *u.IOLog
	}
	if a.onChange != nil {
		a.onChange()
	}
	if err := a.audit(ctx, "tenant.update", name, detail); err != nil {
		return t, err
	}
	return t, nil
}

// Key returns the key with the given ID (wrapping store.ErrNotFound when there is none).
func (a *Admin) Key(ctx context.Context, id string) (*store.APIKey, error) {
	return a.st.APIKey(ctx, id)
}

// CreateKeyExpiring is CreateKey (a generated key) with an expiry: the key stops authenticating at
// expires (zero: never). An expiry not in the future is an error.
func (a *Admin) CreateKeyExpiring(ctx context.Context, tenant string, expires time.Time) (string, *store.APIKey, error) {
	if !expires.IsZero() && !expires.After(a.now()) {
		return "", nil, fmt.Errorf("gateway: expires_at %s is not in the future", expires.UTC().Format(time.RFC3339))
	}
	if tenant == "" {
		return "", nil, errors.New("gateway: a key needs a tenant")
	}
	id, err := a.tenantID(ctx, tenant)
	if err != nil {
		return "", nil, err
	}
	key, k, err := a.newKey(id, "")
	if err != nil {
		return "", nil, err
	}
	if !expires.IsZero() {
		k.ExpiresAt = expires.UTC().Truncate(time.Millisecond)
	}
	if err := a.st.CreateAPIKey(ctx, k); err != nil {
		return "", nil, err
	}
	if err := a.audit(ctx, "key.create", k.ID, map[string]any{"tenant": tenant, "prefix": k.Prefix, "expires_at": unixOrNull(k.ExpiresAt)}); err != nil {
		return key, k, err
	}
	return key, k, nil
}

// RotateKey replaces the key with the given ID by a new generated key of the same tenant, policy
// and expiry, returned once as plaintext; the old key keeps authenticating for grace (0 to
// MaxGracePeriod; 0 ends it at once) and is refused after. It returns the new key's plaintext and
// record and the old key as updated (RevokedAt = end of grace, ReplacedBy = the new ID). An
// unknown, revoked or expired key wraps store.ErrNotFound; a key already rotated store.ErrExists.
func (a *Admin) RotateKey(ctx context.Context, id string, grace time.Duration) (string, *store.APIKey, *store.APIKey, error) {
	if grace < 0 || grace > MaxGracePeriod {
		return "", nil, nil, fmt.Errorf("gateway: grace period %s: want 0 to %s", grace, MaxGracePeriod)
	}
	key, next, err := a.newKey("", "")
	if err != nil {
		return "", nil, nil, err
	}
	graceEnd := next.CreatedAt.Add(grace)
	old, err := a.st.RotateAPIKey(ctx, id, next, graceEnd)
	if err != nil {
		return "", nil, nil, err
	}
	if err := a.audit(ctx, "key.rotate", id, map[string]any{"new_key": next.ID, "prefix": next.Prefix, "grace_period": grace.String(),
		"old_valid_until": graceEnd.UTC().Format(time.RFC3339)}); err != nil {
		return key, next, old, err
	}
	return key, next, old, nil
}

// SetKeyExpiry sets the expiry of the key with the given ID (zero: never expires). An expiry in
// the past expires the key at once.
func (a *Admin) SetKeyExpiry(ctx context.Context, id string, expires time.Time) (*store.APIKey, error) {
	if !expires.IsZero() {
		expires = expires.UTC().Truncate(time.Millisecond)
	}
	if err := a.st.SetAPIKeyExpiry(ctx, id, expires); err != nil {
		return nil, err
	}
	k, err := a.st.APIKey(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := a.audit(ctx, "key.expiry", id, map[string]any{"expires_at": unixOrNull(expires)}); err != nil {
		return k, err
	}
	return k, nil
}

// IOLog returns the newest I/O log entries of the tenant named tenant ("" = all), at most limit.
func (a *Admin) IOLog(ctx context.Context, tenant string, limit int) ([]store.IOLogEntry, error) {
	id, err := a.tenantID(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultUsageLimit
	}
	return a.st.ListIOLog(ctx, id, limit)
}
