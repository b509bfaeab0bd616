package store

import (
	"context"
	"fmt"
	"time"
)

// IOLogEntry is one request/response pair of a tenant that opted in to the I/O log (tenants.iolog).
// Bodies are stored as the gateway hands them over, already redacted and cut to size; nothing
// else in Strata keeps request or response bodies.
type IOLogEntry struct {
	// ID identifies the entry ("io_<random>").
	ID                         string
	TenantID, KeyID, RequestID string
	Model                      string
	Request, Response          []byte
	// CreatedAt has millisecond precision; entries older than the retention are purged by it.
	CreatedAt time.Time
}

// InsertIOLog writes e. An existing ID gives ErrExists.
func (s *Store) InsertIOLog(ctx context.Context, e *IOLogEntry) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO io_log (id, tenant_id, key_id, request_id, model, request, response, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), e.ID, e.TenantID, e.KeyID, e.RequestID, e.Model, gwNonNilBytes(e.Request),
		gwNonNilBytes(e.Response), gwMillis(e.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: io log %s: %w", e.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: insert io log: %w", err)
	}
	return nil
}

func gwNonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// ListIOLog returns the newest entries of the tenant with the given id ("" = all tenants), at
// most limit of them (limit <= 0: all), newest first.
func (s *Store) ListIOLog(ctx context.Context, tenantID string, limit int) ([]IOLogEntry, error) {
	query, args := `SELECT id, tenant_id, key_id, request_id, model, request, response, created_at FROM io_log`, []any{}
	if tenantID != "" {
		query, args = query+` WHERE tenant_id = ?`, append(args, tenantID)
	}
	query += ` ORDER BY created_at DESC, id DESC`
	if limit > 0 {
		query, args = query+` LIMIT ?`, append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list io log: %w", err)
	}
	defer rows.Close()
	var out []IOLogEntry
	for rows.Next() {
		var e IOLogEntry
		var created int64
		if err := rows.Scan(&e.ID, &e.TenantID, &e.KeyID, &e.RequestID, &e.Model, &e.Request, &e.Response, &created); err != nil {
			return nil, fmt.Errorf("store: scan io log: %w", err)
		}
		e.CreatedAt = gwFromMillis(created)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list io log: %w", err)
	}
	return out, nil
}

// PurgeIOLog deletes the entries created before `before` and returns how many it deleted.
func (s *Store) PurgeIOLog(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM io_log WHERE created_at < ?`), gwMillis(before))
	if err != nil {
		return 0, fmt.Errorf("store: purge io log: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: purge io log: %w", err)
	}
	return n, nil
}

// IOLogTenants returns the ids of the tenants that opted in to the I/O log.
func (s *Store) IOLogTenants(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM tenants WHERE iolog = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: io log tenants: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: io log tenants: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: io log tenants: %w", err)
	}
	return out, nil
}
