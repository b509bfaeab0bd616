package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/strata-inference/strata/internal/config"
)

// Tenant is a customer of the tenant plane: the unit that API keys, limits and usage belong to.
type Tenant struct {
	// ID is the stable identifier ("ten_<random>"), referenced by keys and usage.
	ID string
	// Name is unique and human-chosen; the CLI addresses tenants by name.
	Name string
	// ExternalID maps the tenant to the operator's own customer system; may be empty. Unique
	// among tenants when set (a second tenant with the same one gives ErrExists).
	ExternalID string
	// RPM and TPM are the requests-per-minute and tokens-per-minute limits; 0 means unlimited.
	RPM, TPM int
	// Models is the model allowlist; empty means every model.
	Models []string
	// CreatedAt has millisecond precision.
	CreatedAt time.Time
	// Tier names the tenant's tier (config gateway.tiers); "" uses the default tier.
	Tier string
	// Policy overrides the tier's policy field by field (nil fields inherit).
	Policy config.Policy
	// IOLog says whether the tenant opted in to the I/O log (request and response bodies kept,
	// redacted, for the configured retention).
	IOLog bool
}

// Allows reports whether the tenant's own allowlist (the models column) lets it use model: true when
// the list is empty or names it. The gateway enforces the effective policy (tier and overrides).
func (t *Tenant) Allows(model string) bool {
	return len(t.Models) == 0 || slices.Contains(t.Models, model)
}

const tenantColumns = `id, name, external_id, rpm, tpm, models, created_at, tier, policy, iolog`

// CreateTenant inserts t and, in the same transaction, the given API keys (so a tenant and its
// first key exist together or not at all). A tenant name that exists gives ErrExists.
func (s *Store) CreateTenant(ctx context.Context, t *Tenant, keys ...*APIKey) error {
	models, err := json.Marshal(gwNonNil(t.Models))
	if err != nil {
		return fmt.Errorf("store: tenant models: %w", err)
	}
	policy, err := json.Marshal(t.Policy)
	if err != nil {
		return fmt.Errorf("store: tenant policy: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: create tenant: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO tenants (`+tenantColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.Name, t.ExternalID, t.RPM, t.TPM, string(models), gwMillis(t.CreatedAt), t.Tier, string(policy), gwBool(t.IOLog))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: tenant %q (or its external id): %w", t.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create tenant: %w", err)
	}
	for _, k := range keys {
		if err := s.insertAPIKey(ctx, tx, k); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: create tenant: %w", err)
	}
	return nil
}

// Tenant returns the tenant with the given id, or ErrNotFound.
func (s *Store) Tenant(ctx context.Context, id string) (*Tenant, error) {
	return s.oneTenant(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = ?`, id)
}

// TenantByName returns the tenant with the given name, or ErrNotFound.
func (s *Store) TenantByName(ctx context.Context, name string) (*Tenant, error) {
	return s.oneTenant(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE name = ?`, name)
}

// ListTenants returns all tenants ordered by name.
func (s *Store) ListTenants(ctx context.Context) ([]Tenant, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+tenantColumns+` FROM tenants ORDER BY name`))
	if err != nil {
		return nil, fmt.Errorf("store: list tenants: %w", err)
	}
	defer rows.Close()
	var out []Tenant
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list tenants: %w", err)
	}
	return out, nil
}

// CountTenants returns the number of tenants.
func (s *Store) CountTenants(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM tenants`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count tenants: %w", err)
	}
	return n, nil
}

func (s *Store) oneTenant(ctx context.Context, query string, arg any) (*Tenant, error) {
	t, err := scanTenant(s.db.QueryRowContext(ctx, s.q(query), arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: tenant: %w", ErrNotFound)
	}
	return t, err
}

type gwScanner interface{ Scan(dest ...any) error }

// scanTenant reads the columns of tenantColumns, in order, from sc, followed by extra.
func scanTenant(sc gwScanner, extra ...any) (*Tenant, error) {
	var (
		t       Tenant
		models  string
		created int64
		policy  string
		iolog   int64
	)
	dest := append([]any{&t.ID, &t.Name, &t.ExternalID, &t.RPM, &t.TPM, &models, &created, &t.Tier, &policy, &iolog}, extra...)
	if err := sc.Scan(dest...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		return nil, fmt.Errorf("store: scan tenant: %w", err)
	}
	if err := json.Unmarshal([]byte(models), &t.Models); err != nil {
		return nil, fmt.Errorf("store: tenant %s models: %w", t.ID, err)
	}
	if len(t.Models) == 0 {
		t.Models = nil
	}
	if err := json.Unmarshal([]byte(policy), &t.Policy); err != nil {
		return nil, fmt.Errorf("store: tenant %s policy: %w", t.ID, err)
	}
	t.CreatedAt, t.IOLog = gwFromMillis(created), iolog != 0
	return &t, nil
}

func gwNonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// gwMillis is t as Unix milliseconds, the unit of every time column of the tenant plane.
func gwMillis(t time.Time) int64 { return t.UnixMilli() }

func gwFromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// gwNullMillis is a nullable time column: NULL for the zero time.
func gwNullMillis(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: gwMillis(t), Valid: true}
}

func gwFromNullMillis(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return gwFromMillis(v.Int64)
}

// SetTenantPolicy sets the tier and the policy overrides of the tenant with the given id (the
// whole policy is replaced: unset fields inherit from the tier). An unknown id gives ErrNotFound.
// The caller validates the policy.
func (s *Store) SetTenantPolicy(ctx context.Context, id, tier string, p config.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("store: tenant policy: %w", err)
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE tenants SET tier = ?, policy = ? WHERE id = ?`), tier, string(b), id)
	if err != nil {
		return fmt.Errorf("store: set tenant policy: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("store: tenant %s: %w", id, ErrNotFound)
	}
	return nil
}

func gwBool(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// TenantByExternalID returns the tenant with the given (non-empty) external id, or ErrNotFound.
func (s *Store) TenantByExternalID(ctx context.Context, externalID string) (*Tenant, error) {
	if externalID == "" {
		return nil, fmt.Errorf("store: tenant: %w", ErrNotFound)
	}
	return s.oneTenant(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE external_id = ?`, externalID)
}

// TenantUpdate is a partial update of a tenant: nil fields are left as they are.
type TenantUpdate struct {
	// ExternalID "" clears it.
	ExternalID *string
	RPM, TPM   *int
	// Models nil leaves the allowlist; an empty non-nil slice clears it (every model).
	Models *[]string
	IOLog  *bool
}

// UpdateTenant applies u to the tenant with the given id and returns the tenant as updated. An
// unknown id gives ErrNotFound; an external id another tenant has gives ErrExists.
func (s *Store) UpdateTenant(ctx context.Context, id string, u TenantUpdate) (*Tenant, error) {
	var sets []string
	var args []any
	if u.ExternalID != nil {
		sets, args = append(sets, "external_id = ?"), append(args, *u.ExternalID)
	}
	if u.RPM != nil {
		sets, args = append(sets, "rpm = ?"), append(args, *u.RPM)
	}
	if u.TPM != nil {
		sets, args = append(sets, "tpm = ?"), append(args, *u.TPM)
	}
	if u.Models != nil {
		b, err := json.Marshal(gwNonNil(*u.Models))
		if err != nil {
			return nil, fmt.Errorf("store: tenant models: %w", err)
		}
		sets, args = append(sets, "models = ?"), append(args, string(b))
	}
	if u.IOLog != nil {
		sets, args = append(sets, "iolog = ?"), append(args, gwBool(*u.IOLog))
	}
	if len(sets) > 0 {
		res, err := s.db.ExecContext(ctx, s.q(`UPDATE tenants SET `+strings.Join(sets, ", ")+` WHERE id = ?`), append(args, id)...)
		if isUniqueViolation(err) {
			return nil, fmt.Errorf("store: tenant external id %q: %w", *u.ExternalID, ErrExists)
		}
		if err != nil {
			return nil, fmt.Errorf("store: update tenant: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return nil, fmt.Errorf("store: tenant %s: %w", id, ErrNotFound)
		}
	}
	return s.Tenant(ctx, id)
}
