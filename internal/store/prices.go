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

// TierPrice is a price book entry that applies only to the tenants of one tier, overriding the
// general entries of its model (Price) from its EffectiveAt on.
type TierPrice struct {
	Tier string
	Price
}

// SetTierPrice inserts a tier's price entry, or replaces the entry of the same tier, model and
// EffectiveAt.
func (s *Store) SetTierPrice(ctx context.Context, p *TierPrice) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO tier_prices (tier, model, effective_at, input_micros, cached_micros, output_micros, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tier, model, effective_at) DO UPDATE SET
		input_micros = excluded.input_micros, cached_micros = excluded.cached_micros,
		output_micros = excluded.output_micros, created_at = excluded.created_at`),
		p.Tier, p.Model, gwMillis(p.EffectiveAt), p.InputMicros, p.CachedMicros, p.OutputMicros, gwMillis(p.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: set tier price: %w", err)
	}
	return nil
}

// ListTierPrices returns every tier's price entries ordered by tier, model and EffectiveAt.
func (s *Store) ListTierPrices(ctx context.Context) ([]TierPrice, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT tier, model, effective_at, input_micros, cached_micros, output_micros, created_at
		FROM tier_prices ORDER BY tier, model, effective_at`)
	if err != nil {
		return nil, fmt.Errorf("store: list tier prices: %w", err)
	}
	defer rows.Close()
	var out []TierPrice
	for rows.Next() {
		var p TierPrice
		var eff, created int64
		if err := rows.Scan(&p.Tier, &p.Model, &eff, &p.InputMicros, &p.CachedMicros, &p.OutputMicros, &created); err != nil {
			return nil, fmt.Errorf("store: scan tier price: %w", err)
		}
		p.EffectiveAt, p.CreatedAt = gwFromMillis(eff), gwFromMillis(created)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list tier prices: %w", err)
	}
	return out, nil
}

// GPUCost is an entry of the GPU cost table: what one hour of a GPU type costs the operator, in
// integer micro-USD, from EffectiveAt on until the type's next entry.
type GPUCost struct {
	// GPU is the GPU type as the router reports it (x-gateway-destination-endpoint-served
	// "gpu=" parameter, usage.gpu), e.g. "H100".
	GPU           string
	EffectiveAt   time.Time
	MicrosPerHour int64
	CreatedAt     time.Time
}

// SetGPUCost inserts a GPU cost entry, or replaces the entry of the same GPU and EffectiveAt.
func (s *Store) SetGPUCost(ctx context.Context, c *GPUCost) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO gpu_costs (gpu, effective_at, micros_per_hour, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (gpu, effective_at) DO UPDATE SET micros_per_hour = excluded.micros_per_hour, created_at = excluded.created_at`),
		c.GPU, gwMillis(c.EffectiveAt), c.MicrosPerHour, gwMillis(c.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: set gpu cost: %w", err)
	}
	return nil
}

// ListGPUCosts returns the GPU cost table ordered by GPU and EffectiveAt.
func (s *Store) ListGPUCosts(ctx context.Context) ([]GPUCost, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT gpu, effective_at, micros_per_hour, created_at FROM gpu_costs ORDER BY gpu, effective_at`)
	if err != nil {
		return nil, fmt.Errorf("store: list gpu costs: %w", err)
	}
	defer rows.Close()
	var out []GPUCost
	for rows.Next() {
		var c GPUCost
		var eff, created int64
		if err := rows.Scan(&c.GPU, &eff, &c.MicrosPerHour, &created); err != nil {
			return nil, fmt.Errorf("store: scan gpu cost: %w", err)
		}
		c.EffectiveAt, c.CreatedAt = gwFromMillis(eff), gwFromMillis(created)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list gpu costs: %w", err)
	}
	return out, nil
}

// GPUTime is the summed request duration of one tenant on one GPU type over a time range.
type GPUTime struct {
	GPU      string
	Requests int64
	// DurationMillis is the sum of usage.duration_ms.
	DurationMillis int64
}

// UsageGPUTime sums the request durations of tenantID ("" = all tenants) with since <=
// created_at < until, per GPU type (usage.gpu, "" when unknown), ordered by GPU.
func (s *Store) UsageGPUTime(ctx context.Context, tenantID string, since, until time.Time) ([]GPUTime, error) {
	query := `SELECT gpu, COUNT(*), COALESCE(SUM(duration_ms), 0) FROM usage WHERE created_at >= ? AND created_at < ?`
	args := []any{gwMillis(since), gwMillis(until)}
	if tenantID != "" {
		query, args = query+` AND tenant_id = ?`, append(args, tenantID)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query+` GROUP BY gpu ORDER BY gpu`), args...)
	if err != nil {
		return nil, fmt.Errorf("store: usage gpu time: %w", err)
	}
	defer rows.Close()
	var out []GPUTime
	for rows.Next() {
		var g GPUTime
		if err := rows.Scan(&g.GPU, &g.Requests, &g.DurationMillis); err != nil {
			return nil, fmt.Errorf("store: scan usage gpu time: %w", err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: usage gpu time: %w", err)
	}
	return out, nil
}

// Bill is one stored rating of a tenant's period: each rating (and re-rating after a price
// change) adds a version, so what was billed before a correction stays on record.
type Bill struct {
	TenantID string
	// Period is the calendar month, "YYYY-MM".
	Period string
	// Version counts the ratings of the tenant's period from 1.
	Version int64
	RatedAt time.Time
	// Actor is who rated it (as in the audit log).
	Actor string
	// CostMicros is the period's total charge; GPUCostMicros the GPU cost attributed to it.
	CostMicros, GPUCostMicros int64
	// Lines is the bill's lines as JSON, as the gateway rendered them.
	Lines string
}

// InsertBill stores b as the next version of its tenant's period and sets b.Version.
func (s *Store) InsertBill(ctx context.Context, b *Bill) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: insert bill: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COALESCE(MAX(version), 0) + 1 FROM bills WHERE tenant_id = ? AND period = ?`),
		b.TenantID, b.Period).Scan(&b.Version); err != nil {
		return fmt.Errorf("store: insert bill: %w", err)
	}
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO bills (tenant_id, period, version, rated_at, actor, cost_micros, gpu_cost_micros, lines)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), b.TenantID, b.Period, b.Version, gwMillis(b.RatedAt), b.Actor, b.CostMicros, b.GPUCostMicros, b.Lines)
	if isUniqueViolation(err) {
		return fmt.Errorf("store: bill %s %s: %w", b.TenantID, b.Period, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: insert bill: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: insert bill: %w", err)
	}
	return nil
}

// ListBills returns the stored bills of the tenant with the given id ("" = all) and period (""
// = all), ordered by tenant, period and version.
func (s *Store) ListBills(ctx context.Context, tenantID, period string) ([]Bill, error) {
	query, args := `SELECT tenant_id, period, version, rated_at, actor, cost_micros, gpu_cost_micros, lines FROM bills WHERE 1 = 1`, []any{}
	if tenantID != "" {
		query, args = query+` AND tenant_id = ?`, append(args, tenantID)
	}
	if period != "" {
		query, args = query+` AND period = ?`, append(args, period)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query+` ORDER BY tenant_id, period, version`), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list bills: %w", err)
	}
	defer rows.Close()
	var out []Bill
	for rows.Next() {
		var b Bill
		var rated int64
		if err := rows.Scan(&b.TenantID, &b.Period, &b.Version, &rated, &b.Actor, &b.CostMicros, &b.GPUCostMicros, &b.Lines); err != nil {
			return nil, fmt.Errorf("store: scan bill: %w", err)
		}
		b.RatedAt = gwFromMillis(rated)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list bills: %w", err)
	}
	return out, nil
}
