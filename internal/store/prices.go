package store

import (
	"context"
	"fmt"
	"time"
)

// Price is one entry of the price book: the prices of a model from EffectiveAt on, until the
// model's next entry. Prices are integer micro-USD per million tokens (1_000_000 = $1 per
// million tokens); no floating point holds money anywhere in the tenant plane.
type Price struct {
	Model string
	// EffectiveAt is when the price starts to apply (millisecond precision).
	EffectiveAt time.Time
	// InputMicros prices fresh (uncached) prompt tokens, CachedMicros prompt tokens served from
	// the prefix cache (prompt_tokens_details.cached_tokens), OutputMicros completion tokens.
	InputMicros, CachedMicros, OutputMicros int64
	// CreatedAt is when the entry was written.
	CreatedAt time.Time
}

// SetPrice inserts a price book entry, or replaces the entry of the same model and
// EffectiveAt (a correction of a scheduled price).
func (s *Store) SetPrice(ctx context.Context, p *Price) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO prices (model, effective_at, input_micros, cached_micros, output_micros, created_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model, effective_at) DO UPDATE SET
		input_micros = excluded.input_micros, cached_micros = excluded.cached_micros,
		output_micros = excluded.output_micros, created_at = excluded.created_at`),
		p.Model, gwMillis(p.EffectiveAt), p.InputMicros, p.CachedMicros, p.OutputMicros, gwMillis(p.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: set price: %w", err)
	}
	return nil
}

// ListPrices returns the whole price book ordered by model and EffectiveAt.
func (s *Store) ListPrices(ctx context.Context) ([]Price, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT model, effective_at, input_micros, cached_micros, output_micros, created_at
		FROM prices ORDER BY model, effective_at`)
	if err != nil {
		return nil, fmt.Errorf("store: list prices: %w", err)
	}
	defer rows.Close()
	var out []Price
	for rows.Next() {
		var p Price
		var eff, created int64
		if err := rows.Scan(&p.Model, &eff, &p.InputMicros, &p.CachedMicros, &p.OutputMicros, &created); err != nil {
			return nil, fmt.Errorf("store: scan price: %w", err)
		}
		p.EffectiveAt, p.CreatedAt = gwFromMillis(eff), gwFromMillis(created)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list prices: %w", err)
	}
	return out, nil
}

// UsageTotal is the sum of a tenant's usage records of one model over a time range.
type UsageTotal struct {
	Model                                        string
	Requests                                     int64
	PromptTokens, CachedTokens, CompletionTokens int64
}

// UsageTotals sums the usage records of tenantID ("" = all tenants) with since <= created_at <
// until, per model, ordered by model. The aggregation runs in the database, so rating a month
// reads one row per model and price period rather than every record.
func (s *Store) UsageTotals(ctx context.Context, tenantID string, since, until time.Time) ([]UsageTotal, error) {
	query := `SELECT model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(completion_tokens), 0)
		FROM usage WHERE created_at >= ? AND created_at < ?`
	args := []any{gwMillis(since), gwMillis(until)}
	if tenantID != "" {
		query += ` AND tenant_id = ?`
		args = append(args, tenantID)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query+` GROUP BY model ORDER BY model`), args...)
	if err != nil {
		return nil, fmt.Errorf("store: usage totals: %w", err)
	}
	defer rows.Close()
	var out []UsageTotal
	for rows.Next() {
		var u UsageTotal
		if err := rows.Scan(&u.Model, &u.Requests, &u.PromptTokens, &u.CachedTokens, &u.CompletionTokens); err != nil {
			return nil, fmt.Errorf("store: scan usage totals: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: usage totals: %w", err)
	}
	return out, nil
}
