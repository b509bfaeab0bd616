package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Usage sources: who counted the tokens of a UsageRecord.
const (
	// UsageEngine: the tokens are the engine's own usage block, copied token for token.
	UsageEngine = "engine"
	// UsageEstimated: the engine reported no usage (a stream cut before its usage chunk, an error
	// answer); the tokens are the gateway's estimate of what was served.
	UsageEstimated = "estimated"
)

// Billed reasons of a UsageRecord.
const (
	// BilledComplete: the answer reached its end (the engine's last byte or [DONE]).
	BilledComplete = "complete"
	// BilledClientDisconnect: the client went away before the end; what was generated is billed.
	BilledClientDisconnect = "client_disconnect"
	// BilledUpstreamError: the engine failed or answered an error; what it reported is billed.
	BilledUpstreamError = "upstream_error"
)

// UsageRecord is one metered request: the ledger row of the tenant plane, immutable once written.
type UsageRecord struct {
	// RequestID is the idempotency key (X-Request-Id): one record per request id.
	RequestID string
	TenantID  string
	KeyID     string
	Model     string
	// Adapter is the LoRA adapter the request was served with ("" = the base model).
	Adapter string
	// Endpoint is the replica that served the request and GPU its GPU type, from the router's
	// x-gateway-destination-endpoint-served header ("name;gpu=TYPE"); GPU may be empty.
	Endpoint, GPU string
	// PromptTokens, CachedTokens (prompt_tokens_details.cached_tokens) and CompletionTokens are
	// as the engine reported them when Source is UsageEngine.
	PromptTokens, CachedTokens, CompletionTokens int64
	// TTFT is the time to the first body byte of a stream, or to the response headers of a
	// non-streaming answer; Duration is the whole request. Both are stored in milliseconds.
	TTFT, Duration time.Duration
	// Status is the HTTP status answered to the client.
	Status int
	Stream bool
	// Source is UsageEngine or UsageEstimated.
	Source string
	// BilledReason says why the request was billed as it was: BilledComplete,
	// BilledClientDisconnect or BilledUpstreamError; "" for records written before it existed.
	BilledReason string
	// CreatedAt has millisecond precision.
	CreatedAt time.Time
}

// UsageFilter selects usage records. Zero fields do not filter.
type UsageFilter struct {
	TenantID string
	// Since (inclusive) and Until (exclusive) bound CreatedAt.
	Since, Until time.Time
	// Limit caps the number of records returned, newest first; 0 means no cap.
	Limit int
}

const usageColumns = `request_id, tenant_id, key_id, model, endpoint, gpu, prompt_tokens, cached_tokens,
	completion_tokens, ttft_ms, duration_ms, status, stream, usage_source, created_at, billed_reason, adapter`

// InsertUsage writes u unless a record with its request id exists. It returns whether u was
// inserted: false means a record for this request id was already there and was left unchanged,
// so a retried write never bills twice.
func (s *Store) InsertUsage(ctx context.Context, u *UsageRecord) (bool, error) {
	stream := 0
	if u.Stream {
		stream = 1
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO usage (`+usageColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING`),
		u.RequestID, u.TenantID, u.KeyID, u.Model, u.Endpoint, u.GPU, u.PromptTokens, u.CachedTokens,
		u.CompletionTokens, u.TTFT.Milliseconds(), u.Duration.Milliseconds(), u.Status, stream, u.Source,
		gwMillis(u.CreatedAt), u.BilledReason, u.Adapter)
	if err != nil {
		return false, fmt.Errorf("store: insert usage: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: insert usage: %w", err)
	}
	return n == 1, nil
}

// UsageByRequestID returns the record of the request id, or ErrNotFound.
func (s *Store) UsageByRequestID(ctx context.Context, requestID string) (*UsageRecord, error) {
	recs, err := s.queryUsage(ctx, `SELECT `+usageColumns+` FROM usage WHERE request_id = ?`, requestID)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("store: usage %s: %w", requestID, ErrNotFound)
	}
	return &recs[0], nil
}

// ListUsage returns the records matching f, newest first.
func (s *Store) ListUsage(ctx context.Context, f UsageFilter) ([]UsageRecord, error) {
	var where []string
	var args []any
	if f.TenantID != "" {
		where, args = append(where, "tenant_id = ?"), append(args, f.TenantID)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, gwMillis(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "created_at < ?"), append(args, gwMillis(f.Until))
	}
	query := `SELECT ` + usageColumns + ` FROM usage`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY created_at DESC, request_id DESC`
	if f.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	return s.queryUsage(ctx, query, args...)
}

func (s *Store) queryUsage(ctx context.Context, query string, args ...any) ([]UsageRecord, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list usage: %w", err)
	}
	defer rows.Close()
	var out []UsageRecord
	for rows.Next() {
		var u UsageRecord
		var ttft, dur, created, stream int64
		if err := rows.Scan(&u.RequestID, &u.TenantID, &u.KeyID, &u.Model, &u.Endpoint, &u.GPU, &u.PromptTokens,
			&u.CachedTokens, &u.CompletionTokens, &ttft, &dur, &u.Status, &stream, &u.Source, &created, &u.BilledReason, &u.Adapter); err != nil {
			return nil, fmt.Errorf("store: scan usage: %w", err)
		}
		u.TTFT, u.Duration = time.Duration(ttft)*time.Millisecond, time.Duration(dur)*time.Millisecond
		u.Stream, u.CreatedAt = stream != 0, gwFromMillis(created)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list usage: %w", err)
	}
	return out, nil
}
