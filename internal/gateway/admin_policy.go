package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	if err := a.checkConfigured(tier, p); err != nil {
		return err
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
	if err := a.checkConfigured("", p); err != nil {
		return err
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
	books, err := loadPriceBooks(ctx, a.st)
	if err != nil {
		return nil, err
	}
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
		lines, err := rate(ctx, a.st, books.forTier(a.effectiveTier(&t)), t.ID, t.Name, since, until)
		if err != nil {
			return nil, err
		}
		out = append(out, lines...)
	}
	return out, nil
}

// SetTierPrice adds an entry to the price book of tier: it overrides the general price of model
// for the tier's tenants from effective on (same units and bounds as SetPrice).
func (a *Admin) SetTierPrice(ctx context.Context, tier, model string, effective time.Time, in, cached, out int64) (*store.TierPrice, error) {
	if !tenantName.MatchString(tier) {
		return nil, fmt.Errorf("gateway: tier %q: want 1 to 64 letters, digits, '.', '_' or '-'", tier)
	}
	if err := checkPrice(model, in, cached, out); err != nil {
		return nil, err
	}
	p := &store.TierPrice{Tier: tier, Price: store.Price{Model: model, EffectiveAt: effective.UTC().Truncate(time.Millisecond), InputMicros: in,
		CachedMicros: cached, OutputMicros: out, CreatedAt: a.now().UTC().Truncate(time.Millisecond)}}
	if err := a.st.SetTierPrice(ctx, p); err != nil {
		return nil, err
	}
	if err := a.audit(ctx, "price.set", model, map[string]any{"tier": tier, "effective_at": p.EffectiveAt, "input_micros": in,
		"cached_micros": cached, "output_micros": out}); err != nil {
		return p, err
	}
	return p, nil
}

func checkPrice(model string, in, cached, out int64) error {
	if model == "" || len(model) > 256 {
		return fmt.Errorf("gateway: model name %q: want 1 to 256 characters", model)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"input", in}, {"cached", cached}, {"output", out}} {
		if f.v < 0 || f.v > maxPriceMicros {
			return fmt.Errorf("gateway: %s price: must be between 0 and %d micro-USD per million tokens, got %d", f.name, int64(maxPriceMicros), f.v)
		}
	}
	return nil
}

// TierPrices returns every tier's price entries, by tier, model and effective time.
func (a *Admin) TierPrices(ctx context.Context) ([]store.TierPrice, error) {
	return a.st.ListTierPrices(ctx)
}

// maxGPUCostMicros bounds a GPU-hour price: $1,000,000 per hour.
const maxGPUCostMicros = 1_000_000_000_000

// SetGPUCost adds an entry to the GPU cost table: one hour of gpu costs microsPerHour micro-USD
// (0 to 10^12) from effective on. An entry at the same GPU and instant is replaced.
func (a *Admin) SetGPUCost(ctx context.Context, gpu string, effective time.Time, microsPerHour int64) (*store.GPUCost, error) {
	if gpu == "" || len(gpu) > 64 {
		return nil, fmt.Errorf("gateway: gpu %q: want 1 to 64 characters", gpu)
	}
	if microsPerHour < 0 || microsPerHour > maxGPUCostMicros {
		return nil, fmt.Errorf("gateway: gpu cost: must be between 0 and %d micro-USD per hour, got %d", int64(maxGPUCostMicros), microsPerHour)
	}
	c := &store.GPUCost{GPU: gpu, EffectiveAt: effective.UTC().Truncate(time.Millisecond), MicrosPerHour: microsPerHour,
		CreatedAt: a.now().UTC().Truncate(time.Millisecond)}
	if err := a.st.SetGPUCost(ctx, c); err != nil {
		return nil, err
	}
	if err := a.audit(ctx, "gpu_cost.set", gpu, map[string]any{"effective_at": c.EffectiveAt, "micros_per_hour": microsPerHour}); err != nil {
		return c, err
	}
	return c, nil
}

// GPUCosts returns the GPU cost table, by GPU and effective time.
func (a *Admin) GPUCosts(ctx context.Context) ([]store.GPUCost, error) { return a.st.ListGPUCosts(ctx) }

// GPULine is the GPU cost attributed to one tenant on one GPU type over the part of a period
// during which one GPU-hour price was in force.
type GPULine struct {
	GPU         string
	From, Until time.Time
	Requests    int64
	// DurationMillis is the summed duration of the tenant's requests on this GPU type.
	DurationMillis int64
	// MicrosPerHour is the GPU-hour price applied; Unpriced when the GPU type had none.
	MicrosPerHour int64
	Unpriced      bool
	// CostMicros = DurationMillis x MicrosPerHour / 3,600,000, rounded half up.
	CostMicros int64
}

// Invoice is the rated usage of one tenant over one period: the bill lines, tokens by class,
// the charge, the GPU cost attributed to it and the margin.
//
// GPU cost attribution: each request is charged its own duration on its GPU type at that type's
// hourly price. Engines batch requests, so this is an upper bound of the GPU time a request
// really used (N concurrent requests on one GPU are charged N times); the margin is therefore a
// lower bound. It is meant for comparing tenants and prices, not for cost accounting.
type Invoice struct {
	Tenant, TenantID string
	// Period is "YYYY-MM" for a calendar month, "" for a custom range.
	Period      string
	From, Until time.Time
	Tier        string
	Lines       []BillLine
	GPU         []GPULine
	Requests    int64
	// FreshTokens, CachedTokens (input) and OutputTokens sum the lines.
	FreshTokens, CachedTokens, OutputTokens int64
	CostMicros, GPUCostMicros, MarginMicros int64
}

// Invoice rates the tenant named tenant over [since, until) with the price books in force (its
// tier's overrides included) and the GPU cost table.
func (a *Admin) Invoice(ctx context.Context, tenant, period string, since, until time.Time) (*Invoice, error) {
	if !since.Before(until) {
		return nil, fmt.Errorf("gateway: empty period [%s, %s)", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	t, err := a.Tenant(ctx, tenant)
	if err != nil {
		return nil, err
	}
	books, err := loadPriceBooks(ctx, a.st)
	if err != nil {
		return nil, err
	}
	inv := &Invoice{Tenant: t.Name, TenantID: t.ID, Period: period, From: since, Until: until, Tier: a.effectiveTier(t)}
	if inv.Lines, err = rate(ctx, a.st, books.forTier(inv.Tier), t.ID, t.Name, since, until); err != nil {
		return nil, err
	}
	for _, l := range inv.Lines {
		inv.Requests += l.Requests
		inv.FreshTokens += l.FreshTokens
		inv.CachedTokens += l.CachedTokens
		inv.OutputTokens += l.CompletionTokens
		inv.CostMicros = satAdd(inv.CostMicros, l.CostMicros)
	}
	costs, err := a.st.ListGPUCosts(ctx)
	if err != nil {
		return nil, err
	}
	if inv.GPU, err = rateGPU(ctx, a.st, costs, t.ID, since, until); err != nil {
		return nil, err
	}
	for _, g := range inv.GPU {
		inv.GPUCostMicros = satAdd(inv.GPUCostMicros, g.CostMicros)
	}
	inv.MarginMicros = inv.CostMicros - inv.GPUCostMicros
	return inv, nil
}

// rateGPU attributes GPU cost to tenantID over [since, until): one line per GPU type and
// stretch of constant GPU-hour price with usage.
func rateGPU(ctx context.Context, st *store.Store, costs []store.GPUCost, tenantID string, since, until time.Time) ([]GPULine, error) {
	byGPU := map[string][]store.GPUCost{}
	var cuts []time.Time
	for _, c := range costs {
		byGPU[c.GPU] = append(byGPU[c.GPU], c) // ordered by effective time (ListGPUCosts)
		if c.EffectiveAt.After(since) && c.EffectiveAt.Before(until) {
			cuts = append(cuts, c.EffectiveAt)
		}
	}
	slices.SortFunc(cuts, func(a, b time.Time) int { return a.Compare(b) })
	cuts = slices.CompactFunc(cuts, func(a, b time.Time) bool { return a.Equal(b) })
	cuts = append(append([]time.Time{since}, cuts...), until)
	var out []GPULine
	for i := 0; i+1 < len(cuts); i++ {
		tots, err := st.UsageGPUTime(ctx, tenantID, cuts[i], cuts[i+1])
		if err != nil {
			return nil, err
		}
		for _, u := range tots {
			l := GPULine{GPU: u.GPU, From: cuts[i].In(since.Location()), Until: cuts[i+1].In(since.Location()), Requests: u.Requests,
				DurationMillis: u.DurationMillis, Unpriced: true}
			var in *store.GPUCost
			for j := range byGPU[u.GPU] {
				if !byGPU[u.GPU][j].EffectiveAt.After(cuts[i]) {
					in = &byGPU[u.GPU][j]
				}
			}
			if in != nil {
				l.MicrosPerHour, l.Unpriced = in.MicrosPerHour, false
				// ms x micro-USD/h / 3.6e6 ms/h, half up; the product saturates far beyond any real sum.
				num := mulSat(u.DurationMillis, in.MicrosPerHour)
				l.CostMicros = num/3_600_000 + b2i(num%3_600_000 >= 1_800_000)
			}
			out = append(out, l)
		}
	}
	return out, nil
}

// Rerate rates the tenant's calendar month period ("YYYY-MM" in the billing time zone) with the
// price books as they stand now and stores the result as the period's next bill version. It
// returns the previous stored version (nil for the first rating) and the new one.
func (a *Admin) Rerate(ctx context.Context, tenant, period string) (*store.Bill, *store.Bill, *Invoice, error) {
	since, until, err := ParseMonth(period, a.location())
	if err != nil {
		return nil, nil, nil, err
	}
	inv, err := a.Invoice(ctx, tenant, period, since, until)
	if err != nil {
		return nil, nil, nil, err
	}
	prevs, err := a.st.ListBills(ctx, inv.TenantID, period)
	if err != nil {
		return nil, nil, nil, err
	}
	var prev *store.Bill
	if len(prevs) > 0 {
		prev = &prevs[len(prevs)-1]
	}
	lines, err := json.Marshal(invoiceLines(inv))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gateway: bill lines: %w", err)
	}
	actor := a.actor
	if actor == "" {
		actor = DefaultActor
	}
	b := &store.Bill{TenantID: inv.TenantID, Period: period, RatedAt: a.now().UTC().Truncate(time.Millisecond), Actor: actor,
		CostMicros: inv.CostMicros, GPUCostMicros: inv.GPUCostMicros, Lines: string(lines)}
	if err := a.st.InsertBill(ctx, b); err != nil {
		return nil, nil, nil, err
	}
	detail := map[string]any{"period": period, "version": b.Version, "cost_micros": b.CostMicros, "gpu_cost_micros": b.GPUCostMicros}
	if prev != nil {
		detail["previous_cost_micros"] = prev.CostMicros
	}
	if err := a.audit(ctx, "bill.rate", tenant, detail); err != nil {
		return prev, b, inv, err
	}
	return prev, b, inv, nil
}

// Bills returns the stored bill versions of the tenant named tenant ("" = all) and period (""
// = all).
func (a *Admin) Bills(ctx context.Context, tenant, period string) ([]store.Bill, error) {
	id, err := a.tenantID(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return a.st.ListBills(ctx, id, period)
}

// TenantByID returns the tenant with the given ID (wrapping store.ErrNotFound).
func (a *Admin) TenantByID(ctx context.Context, id string) (*store.Tenant, error) {
	return a.st.Tenant(ctx, id)
}

// EffectivePolicy is the policy that applies to key k of tenant t (k nil: to the tenant's keys
// without overrides): the tier's (with a configuration), the tenant's rpm/tpm/models columns, the
// tenant's overrides, the key's.
func (a *Admin) EffectivePolicy(t *store.Tenant, k *store.APIKey) config.Policy {
	return a.effectivePolicy(t, k)
}

// checkConfigured refuses, when the Admin knows the configuration (WithConfig), a tier that is
// not configured and a "@group" in p.Models that is not a configured model group: a serving
// gateway would silently apply its default tier, or allow nothing for the group.
func (a *Admin) checkConfigured(tier string, p config.Policy) error {
	if a.cfg == nil {
		return nil
	}
	if _, ok := a.cfg.Tiers[tier]; tier != "" && !ok {
		return fmt.Errorf("gateway: tier: %q is not configured (gateway.tiers)", tier)
	}
	for _, m := range p.Models {
		if g, ok := strings.CutPrefix(m, ModelGroupPrefix); ok {
			if _, known := a.cfg.ModelGroups[g]; !known {
				return fmt.Errorf("gateway: models: model group %q is not configured (gateway.model_groups)", g)
			}
		}
	}
	return nil
}
