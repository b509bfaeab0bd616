package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/strata-inference/strata/internal/config"
)

// APIKey is a tenant's API key as stored: never the key itself, only its keyed hash.
type APIKey struct {
	// ID identifies the key in the CLI, logs and usage records ("key_<random>"); it is not secret.
	ID string
	// TenantID is the owning tenant's ID.
	TenantID string
	// Prefix is the visible start of the key ("sk-strata-AbCd"), shown so a person can tell keys
	// apart; it is too short to authenticate with.
	Prefix string
	// Hash is HMAC-SHA-256(server secret, key): 32 bytes, unique.
	Hash []byte
	// CreatedAt, RevokedAt and LastUsedAt have millisecond precision; RevokedAt and LastUsedAt
	// are zero when unset. LastUsedAt is updated at most about once a minute.
	CreatedAt, RevokedAt, LastUsedAt time.Time
	// Policy overrides the tenant's (and tier's) policy for requests with this key, field by field.
	Policy config.Policy
	// ExpiresAt is when the key stops authenticating; zero never.
	ExpiresAt time.Time
	// ReplacedBy is the ID of the key a rotation of this one created ("" when not rotated); a
	// rotated key's RevokedAt is the end of its grace period.
	ReplacedBy string
}

// Revoked reports whether the key was revoked at or before now.
func (k *APIKey) Revoked(now time.Time) bool {
	return !k.RevokedAt.IsZero() && !k.RevokedAt.After(now)
}

// Expired reports whether the key expired at or before now.
func (k *APIKey) Expired(now time.Time) bool {
	return !k.ExpiresAt.IsZero() && !k.ExpiresAt.After(now)
}

// Valid reports whether the key authenticates at now: neither revoked nor expired.
func (k *APIKey) Valid(now time.Time) bool { return !k.Revoked(now) && !k.Expired(now) }

const apiKeyColumns = `id, tenant_id, prefix, hash, created_at, revoked_at, last_used_at, policy, expires_at, replaced_by`

// CreateAPIKey inserts k. A key whose ID or hash exists gives ErrExists; an unknown tenant gives
// ErrNotFound.
func (s *Store) CreateAPIKey(ctx context.Context, k *APIKey) error {
	if _, err := s.Tenant(ctx, k.TenantID); err != nil {
		return err
	}
	return s.insertAPIKey(ctx, s.db, k)
}

type gwExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Store) insertAPIKey(ctx context.Context, db gwExecer, k *APIKey) error {
	policy, err := json.Marshal(k.Policy)
	if err != nil {
		return fmt.Errorf("store: api key policy: %w", err)
	}
	_, err = db.ExecContext(ctx, s.q(`INSERT INTO api_keys (`+apiKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		k.ID, k.TenantID, k.Prefix, k.Hash, gwMillis(k.CreatedAt), gwNullMillis(k.RevokedAt), gwNullMillis(k.LastUsedAt), string(policy),
		gwNullMillis(k.ExpiresAt), k.ReplacedBy)
	if isUniqueViolation(err) {
		return fmt.Errorf("store: api key %s: %w", k.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create api key: %w", err)
	}
	return nil
}

// APIKeyByHash returns the key with the given hash and its tenant, in one query: the
// authentication lookup. An unknown hash gives ErrNotFound. The caller still compares the hash
// in constant time and checks RevokedAt.
func (s *Store) APIKeyByHash(ctx context.Context, hash []byte) (*APIKey, *Tenant, error) {
	var k APIKey
	var created int64
	var revoked, used, expires sql.NullInt64
	var policy string
	row := s.db.QueryRowContext(ctx, s.q(`SELECT t.id, t.name, t.external_id, t.rpm, t.tpm, t.models, t.created_at, t.tier, t.policy, t.iolog,
		k.id, k.tenant_id, k.prefix, k.hash, k.created_at, k.revoked_at, k.last_used_at, k.policy, k.expires_at, k.replaced_by
		FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ?`), hash)
	t, err := scanTenant(row, &k.ID, &k.TenantID, &k.Prefix, &k.Hash, &created, &revoked, &used, &policy, &expires, &k.ReplacedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("store: api key: %w", ErrNotFound)
	}
	if err != nil {
		return nil, nil, err
	}
	k.CreatedAt, k.RevokedAt, k.LastUsedAt = gwFromMillis(created), gwFromNullMillis(revoked), gwFromNullMillis(used)
	k.ExpiresAt = gwFromNullMillis(expires)
	if err := json.Unmarshal([]byte(policy), &k.Policy); err != nil {
		return nil, nil, fmt.Errorf("store: api key %s policy: %w", k.ID, err)
	}
	return &k, t, nil
}

// APIKey returns the key with the given ID, or ErrNotFound.
func (s *Store) APIKey(ctx context.Context, id string) (*APIKey, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`), id)
	if err != nil {
		return nil, fmt.Errorf("store: api key: %w", err)
	}
	keys, err := scanAPIKeys(rows)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("store: api key %s: %w", id, ErrNotFound)
	}
	return &keys[0], nil
}

// ListAPIKeys returns the keys of the tenant with the given ID ("" = all tenants), oldest first,
// revoked ones included.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	query, args := `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at, id`, []any(nil)
	if tenantID != "" {
		query, args = `SELECT `+apiKeyColumns+` FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id`, []any{tenantID}
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list api keys: %w", err)
	}
	return scanAPIKeys(rows)
}

func scanAPIKeys(rows *sql.Rows) ([]APIKey, error) {
	defer rows.Close()
	var out []APIKey
	for rows.Next() {
		var k APIKey
		var created int64
		var revoked, used, expires sql.NullInt64
		var policy string
		if err := rows.Scan(&k.ID, &k.TenantID, &k.Prefix, &k.Hash, &created, &revoked, &used, &policy, &expires, &k.ReplacedBy); err != nil {
			return nil, fmt.Errorf("store: scan api key: %w", err)
		}
		if err := json.Unmarshal([]byte(policy), &k.Policy); err != nil {
			return nil, fmt.Errorf("store: api key %s policy: %w", k.ID, err)
		}
		k.CreatedAt, k.RevokedAt, k.LastUsedAt = gwFromMillis(created), gwFromNullMillis(revoked), gwFromNullMillis(used)
		k.ExpiresAt = gwFromNullMillis(expires)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list api keys: %w", err)
	}
	return out, nil
}

// RevokeAPIKey sets the key's revoked_at to at. Revoking a revoked key is a no-op that keeps the
// first time; an unknown ID gives ErrNotFound.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`), gwMillis(at), id)
	if err != nil {
		return fmt.Errorf("store: revoke api key: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		return nil
	}
	_, err = s.APIKey(ctx, id)
	return err
}

// TouchAPIKey records a use of the key at `at`. It only moves last_used_at forward, so
// concurrent or late touches never move it back.
func (s *Store) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`),
		gwMillis(at), id, gwMillis(at))
	if err != nil {
		return fmt.Errorf("store: touch api key: %w", err)
	}
	return nil
}

// SetAPIKeyPolicy replaces the policy overrides of the key with the given id. An unknown id gives
// ErrNotFound. The caller validates the policy.
func (s *Store) SetAPIKeyPolicy(ctx context.Context, id string, p config.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("store: api key policy: %w", err)
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE api_keys SET policy = ? WHERE id = ?`), string(b), id)
	if err != nil {
		return fmt.Errorf("store: set api key policy: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("store: api key %s: %w", id, ErrNotFound)
	}
	return nil
}

// RotateAPIKey inserts next, a new key of old's tenant (next.TenantID is set to it), and in the
// same transaction marks old as replaced by next and revoked at graceEnd (old keeps working until
// then; a graceEnd before an earlier revocation keeps the earlier one). next inherits old's policy
// and expiry unless set. An unknown or revoked old key gives ErrNotFound; an old key already
// rotated gives ErrExists.
func (s *Store) RotateAPIKey(ctx context.Context, oldID string, next *APIKey, graceEnd time.Time) (*APIKey, error) {
	old, err := s.APIKey(ctx, oldID)
	if err != nil {
		return nil, err
	}
	if old.Revoked(next.CreatedAt) || old.Expired(next.CreatedAt) {
		return nil, fmt.Errorf("store: api key %s is revoked or expired: %w", oldID, ErrNotFound)
	}
	if old.ReplacedBy != "" {
		return nil, fmt.Errorf("store: api key %s was rotated to %s: %w", oldID, old.ReplacedBy, ErrExists)
	}
	next.TenantID = old.TenantID
	if isZeroPolicy(next.Policy) {
		next.Policy = old.Policy
	}
	if next.ExpiresAt.IsZero() {
		next.ExpiresAt = old.ExpiresAt
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: rotate api key: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	res, err := tx.ExecContext(ctx, s.q(`UPDATE api_keys SET replaced_by = ?,
		revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > ? THEN ? ELSE revoked_at END
		WHERE id = ? AND replaced_by = ''`), next.ID, gwMillis(graceEnd), gwMillis(graceEnd), oldID)
	if err != nil {
		return nil, fmt.Errorf("store: rotate api key: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return nil, fmt.Errorf("store: api key %s was rotated concurrently: %w", oldID, ErrExists)
	}
	if err := s.insertAPIKey(ctx, tx, next); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: rotate api key: %w", err)
	}
	return s.APIKey(ctx, oldID)
}

func isZeroPolicy(p config.Policy) bool {
	b, _ := json.Marshal(p)
	return string(b) == "{}"
}

// SetAPIKeyExpiry sets (zero: clears) the expiry of the key with the given id. An unknown id
// gives ErrNotFound.
func (s *Store) SetAPIKeyExpiry(ctx context.Context, id string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE api_keys SET expires_at = ? WHERE id = ?`), gwNullMillis(at), id)
	if err != nil {
		return fmt.Errorf("store: set api key expiry: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("store: api key %s: %w", id, ErrNotFound)
	}
	return nil
}

// TouchAPIKeys records the last use of many keys at once (id -> time), in one transaction: the
// write-behind flush of last_used_at. Like TouchAPIKey it only moves last_used_at forward.
func (s *Store) TouchAPIKeys(ctx context.Context, uses map[string]time.Time) error {
	if len(uses) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: touch api keys: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	ids := make([]string, 0, len(uses))
	for id := range uses {
		ids = append(ids, id)
	}
	slices.Sort(ids) // a fixed lock order across concurrent flushes
	for _, id := range ids {
		at := gwMillis(uses[id])
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`),
			at, id, at); err != nil {
			return fmt.Errorf("store: touch api keys: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: touch api keys: %w", err)
	}
	return nil
}
