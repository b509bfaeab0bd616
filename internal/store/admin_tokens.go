package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AdminToken is an operator's token for the admin REST API (/admin/v1) as stored: never the token
// itself, only its keyed hash. Admin tokens live in their own table, apart from tenant API keys,
// so a tenant key can never authenticate as an admin and vice versa.
type AdminToken struct {
	// ID identifies the token in the CLI and the audit log ("adm_<random>"); it is not secret.
	ID string
	// Name is a free label chosen by the operator (who or what uses the token); may be empty.
	Name string
	// Prefix is the visible start of the token ("sk-strata-admin-AbCd"); too short to authenticate.
	Prefix string
	// Hash is HMAC-SHA-256(server secret, token): 32 bytes, unique.
	Hash []byte
	// Scopes are the granted scopes ("read", "keys", "policy", "billing"), in the order given.
	Scopes []string
	// CreatedAt and RevokedAt have millisecond precision; RevokedAt is zero when not revoked.
	CreatedAt, RevokedAt time.Time
}

// Revoked reports whether the token was revoked at or before now.
func (t *AdminToken) Revoked(now time.Time) bool {
	return !t.RevokedAt.IsZero() && !t.RevokedAt.After(now)
}

// HasScope reports whether the token grants scope.
func (t *AdminToken) HasScope(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

const adminTokenColumns = `id, name, prefix, hash, scopes, created_at, revoked_at`

// CreateAdminToken inserts t. A token whose ID or hash exists gives ErrExists. Scopes are stored
// comma-separated, so a scope must not contain a comma (the gateway only grants fixed names).
func (s *Store) CreateAdminToken(ctx context.Context, t *AdminToken) error {
	for _, sc := range t.Scopes {
		if sc == "" || strings.Contains(sc, ",") {
			return fmt.Errorf("store: admin token scope %q: empty or holds a comma", sc)
		}
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO admin_tokens (`+adminTokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.Name, t.Prefix, t.Hash, strings.Join(t.Scopes, ","), gwMillis(t.CreatedAt), gwNullMillis(t.RevokedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: admin token %s: %w", t.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create admin token: %w", err)
	}
	return nil
}

type rowScanner interface{ Scan(dest ...any) error }

func scanAdminToken(row rowScanner) (*AdminToken, error) {
	var t AdminToken
	var scopes string
	var created int64
	var revoked sql.NullInt64
	if err := row.Scan(&t.ID, &t.Name, &t.Prefix, &t.Hash, &scopes, &created, &revoked); err != nil {
		return nil, err
	}
	if scopes != "" {
		t.Scopes = strings.Split(scopes, ",")
	}
	t.CreatedAt = gwFromMillis(created)
	if revoked.Valid {
		t.RevokedAt = gwFromMillis(revoked.Int64)
	}
	return &t, nil
}

// AdminTokenByHash returns the admin token with the given hash: the admin API's authentication
// lookup. An unknown hash gives ErrNotFound. The caller still compares the hash in constant time
// and checks RevokedAt.
func (s *Store) AdminTokenByHash(ctx context.Context, hash []byte) (*AdminToken, error) {
	t, err := scanAdminToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+adminTokenColumns+` FROM admin_tokens WHERE hash = ?`), hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: admin token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: admin token: %w", err)
	}
	return t, nil
}

// ListAdminTokens returns every admin token, revoked ones included, oldest first (ties by ID).
func (s *Store) ListAdminTokens(ctx context.Context) ([]AdminToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list admin tokens: %w", err)
	}
	defer rows.Close()
	var out []AdminToken
	for rows.Next() {
		t, err := scanAdminToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list admin tokens: %w", err)
		}
		out = append(out, *t)
	}
	return out, rows.Err()
}

// RevokeAdminToken marks the token with the given ID revoked at `at`. Revoking a revoked token
// keeps the first revocation time and is not an error; an unknown ID gives ErrNotFound.
func (s *Store) RevokeAdminToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`), gwMillis(at), id)
	if err != nil {
		return fmt.Errorf("store: revoke admin token: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: revoke admin token: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("store: admin token %s: %w", id, ErrNotFound)
	}
	return nil
}
