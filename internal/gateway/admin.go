package gateway

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

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
