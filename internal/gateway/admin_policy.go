package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// SetTenantPolicy assigns the tenant named tenant to tier ("" = the configured default tier) and
// replaces its policy overrides with p (unset fields inherit from the tier). The tier is not
// checked against a configuration here (the CLI may run with another config than the gateway):
// a gateway that does not know the tier applies its default tier. p is validated (an error names
// the field); an unknown tenant wraps store.ErrNotFound. A running gateway applies the change
// within AuthCacheTTL.
func (a *Admin) SetTenantPolicy(ctx context.Context, tenant, tier string, p config.Policy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("gateway: policy: %w", err)
	}
	if tier != "" && !tenantName.MatchString(tier) {
		return fmt.Errorf("gateway: tier %q: want 1 to 64 letters, digits, '.', '_' or '-'", tier)
	}
	id, err := a.tenantID(ctx, tenant)
	if err != nil {
		return err
	}
	if id == "" {
		return errors.New("gateway: a policy needs a tenant")
	}
	if err := a.st.SetTenantPolicy(ctx, id, tier, p); err != nil {
		return err
	}
	return a.audit(ctx, "tenant.policy", tenant, map[string]any{"tier": tier, "policy": p})
}

// SetKeyPolicy replaces the policy overrides of the key with the given ID ("key_..."); they
// override the tenant's policy for requests with that key. A key that sets rpm or tpm gets rate
// buckets of its own. p is validated; an unknown key wraps store.ErrNotFound.
func (a *Admin) SetKeyPolicy(ctx context.Context, keyID string, p config.Policy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("gateway: policy: %w", err)
	}
	if err := a.st.SetAPIKeyPolicy(ctx, keyID, p); err != nil {
		return err
	}
	return a.audit(ctx, "key.policy", keyID, map[string]any{"policy": p})
}

// maxPriceMicros bounds a price: $1,000,000 per million tokens.
const maxPriceMicros = 1_000_000_000_000

// SetPrice adds an entry to the price book: from effective on, model costs in, cached and out
// micro-USD per million fresh input, cached input and output tokens. An entry at the same model
// and instant is replaced (a correction); usage is rated with the book as it stands when rated,
// so a correction re-rates the period it covers. Prices must be in [0, 10^12].
func (a *Admin) SetPrice(ctx context.Context, model string, effective time.Time, in, cached, out int64) (*store.Price, error) {
	if model == "" || len(model) > 256 {
		return nil, fmt.Errorf("gateway: model name %q: want 1 to 256 characters", model)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"input", in}, {"cached", cached}, {"output", out}} {
		if f.v < 0 || f.v > maxPriceMicros {
			return nil, fmt.Errorf("gateway: %s price: must be between 0 and %d micro-USD per million tokens, got %d", f.name, int64(maxPriceMicros), f.v)
		}
	}
	p := &store.Price{Model: model, EffectiveAt: effective.UTC().Truncate(time.Millisecond), InputMicros: in, CachedMicros: cached,
		OutputMicros: out, CreatedAt: a.now().UTC().Truncate(time.Millisecond)}
	if err := a.st.SetPrice(ctx, p); err != nil {
		return nil, err
	}
	if err := a.audit(ctx, "price.set", model, map[string]any{"effective_at": p.EffectiveAt, "input_micros": in, "cached_micros": cached, "output_micros": out}); err != nil {
		return p, err
	}
	return p, nil
}

// Prices returns the price book, by model and effective time.
func (a *Admin) Prices(ctx context.Context) ([]store.Price, error) {
	return a.st.ListPrices(ctx)
}

// Bill rates the usage of the tenant named tenant ("" = every tenant, one tenant after another
// by name) in [since, until) with the current price book: one BillLine per tenant, model and
// stretch of constant price that has usage. Lines of a tenant are ordered by time, then model.
func (a *Admin) Bill(ctx context.Context, tenant string, since, until time.Time) ([]BillLine, error) {
	if !since.Before(until) {
		return nil, fmt.Errorf("gateway: empty period [%s, %s)", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	ps, err := a.st.ListPrices(ctx)
	if err != nil {
		return nil, err
	}
	pb := newPriceBook(ps)
	var tenants []store.Tenant
	if tenant != "" {
		t, err := a.st.TenantByName(ctx, tenant)
		if err != nil {
			return nil, fmt.Errorf("gateway: tenant %q: %w", tenant, err)
		}
		tenants = []store.Tenant{*t}
	} else if tenants, err = a.st.ListTenants(ctx); err != nil {
		return nil, err
	}
	var out []BillLine
	for _, t := range tenants {
		lines, err := rate(ctx, a.st, pb, t.ID, t.Name, since, until)
		if err != nil {
			return nil, err
		}
		out = append(out, lines...)
	}
	return out, nil
}
