package gateway

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/strata-inference/strata/internal/store"
)

// Rating is separate from metering: usage records hold tokens only (what the engine reported),
// and cost is computed from them with the price book in force when each request was served. A
// price change therefore never rewrites the ledger, and re-running a rating after a correction
// of the price book re-rates the period.
//
// Money is integer micro-USD everywhere. A price is micro-USD per million tokens, so tokens x
// price is exact in units of 1e-12 USD ("picos"); it is divided down to micro-USD once per sum:
// rounded half up for a bill line, rounded up for a spend reservation (a cap is never undercut).

// picosPerMicro is the number of 1e-12 USD in one micro-USD.
const picosPerMicro = 1_000_000

// costPicos is the exact cost in 1e-12 USD of prompt tokens (cached of which came from the
// prefix cache) and completion tokens at price p, saturating at math.MaxInt64. Cached tokens
// beyond the prompt are treated as the whole prompt.
func costPicos(p *store.Price, prompt, cached, completion int64) int64 {
	cached = min(max(cached, 0), max(prompt, 0))
	fresh := max(prompt, 0) - cached
	return satAdd(satAdd(mulSat(fresh, p.InputMicros), mulSat(cached, p.CachedMicros)), mulSat(max(completion, 0), p.OutputMicros))
}

// mulSat is a*b for non-negative a and b, saturating at math.MaxInt64.
func mulSat(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(lo)
}

// microsUp and microsRound turn picos into micro-USD, rounded up and half up.
func microsUp(picos int64) int64 { return picos/picosPerMicro + b2i(picos%picosPerMicro != 0) }
func microsRound(picos int64) int64 {
	return picos/picosPerMicro + b2i(picos%picosPerMicro >= picosPerMicro/2)
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// priceBook is the price book in memory: per model, entries sorted by EffectiveAt.
type priceBook map[string][]store.Price

func newPriceBook(prices []store.Price) priceBook {
	pb := priceBook{}
	for _, p := range prices {
		pb[p.Model] = append(pb[p.Model], p)
	}
	for _, ps := range pb {
		sort.Slice(ps, func(i, j int) bool { return ps[i].EffectiveAt.Before(ps[j].EffectiveAt) })
	}
	return pb
}

// at returns the price of model in force at t: its last entry with EffectiveAt <= t.
func (pb priceBook) at(model string, t time.Time) (*store.Price, bool) {
	ps := pb[model]
	i := sort.Search(len(ps), func(i int) bool { return ps[i].EffectiveAt.After(t) })
	if i == 0 {
		return nil, false
	}
	return &ps[i-1], true
}

// boundaries returns the EffectiveAt instants of every model strictly inside (since, until),
// sorted and distinct: the points where some price changes.
func (pb priceBook) boundaries(since, until time.Time) []time.Time {
	var out []time.Time
	for _, ps := range pb {
		for _, p := range ps {
			if p.EffectiveAt.After(since) && p.EffectiveAt.Before(until) {
				out = append(out, p.EffectiveAt)
			}
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return slices.CompactFunc(out, func(a, b time.Time) bool { return a.Equal(b) })
}

// pricer is a price book as rating reads it: the price in force for a model at an instant, and
// the instants inside a period where some price changes.
type pricer interface {
	at(model string, t time.Time) (*store.Price, bool)
	boundaries(since, until time.Time) []time.Time
}

// tieredBook is the price book of one tier's tenants: the tier's own entries (store.TierPrice)
// where one is in force for the model, else the general book.
type tieredBook struct{ base, tier priceBook }

func (b tieredBook) at(model string, t time.Time) (*store.Price, bool) {
	if p, ok := b.tier.at(model, t); ok {
		return p, true
	}
	return b.base.at(model, t)
}

func (b tieredBook) boundaries(since, until time.Time) []time.Time {
	out := append(b.base.boundaries(since, until), b.tier.boundaries(since, until)...)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return slices.CompactFunc(out, func(a, b time.Time) bool { return a.Equal(b) })
}

// priceBooks is the general price book and every tier's overrides.
type priceBooks struct {
	base  priceBook
	tiers map[string]priceBook
}

func newPriceBooks(ps []store.Price, tps []store.TierPrice) *priceBooks {
	byTier := map[string][]store.Price{}
	for _, tp := range tps {
		byTier[tp.Tier] = append(byTier[tp.Tier], tp.Price)
	}
	b := &priceBooks{base: newPriceBook(ps), tiers: map[string]priceBook{}}
	for t, ps := range byTier {
		b.tiers[t] = newPriceBook(ps)
	}
	return b
}

// forTier returns the book tenants of tier are rated with.
func (b *priceBooks) forTier(tier string) pricer {
	if tb, ok := b.tiers[tier]; ok {
		return tieredBook{base: b.base, tier: tb}
	}
	return b.base
}

// loadPriceBooks reads the general and the tier price books.
func loadPriceBooks(ctx context.Context, st *store.Store) (*priceBooks, error) {
	ps, err := st.ListPrices(ctx)
	if err != nil {
		return nil, err
	}
	tps, err := st.ListTierPrices(ctx)
	if err != nil {
		return nil, err
	}
	return newPriceBooks(ps, tps), nil
}

// prices caches the store's price books for the admission path, re-read at most every ttl.
type prices struct {
	st  *store.Store
	ttl time.Duration

	mu      sync.Mutex
	books   *priceBooks
	fetched time.Time
}

func (p *prices) get(ctx context.Context, now time.Time) (*priceBooks, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.books != nil && now.Sub(p.fetched) < p.ttl && !now.Before(p.fetched) {
		return p.books, nil
	}
	b, err := loadPriceBooks(ctx, p.st)
	if err != nil {
		return nil, err
	}
	p.books, p.fetched = b, now
	return p.books, nil
}

// Month returns the calendar month of t in loc as "YYYY-MM" and its bounds [start, end).
func Month(t time.Time, loc *time.Location) (string, time.Time, time.Time) {
	l := t.In(loc)
	start := time.Date(l.Year(), l.Month(), 1, 0, 0, 0, 0, loc)
	return start.Format("2006-01"), start, start.AddDate(0, 1, 0)
}

// ParseMonth parses "YYYY-MM" as a calendar month in loc and returns its bounds [start, end).
func ParseMonth(s string, loc *time.Location) (time.Time, time.Time, error) {
	t, err := time.ParseInLocation("2006-01", s, loc)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("gateway: period %q: want YYYY-MM", s)
	}
	return t, t.AddDate(0, 1, 0), nil
}

// BillLine is the rated usage of one tenant and model over the part of a period during which
// one price was in force.
type BillLine struct {
	Tenant string // tenant name
	Model  string
	// From and Until bound the part of the period this line covers.
	From, Until time.Time
	Requests    int64
	// FreshTokens are prompt tokens not served from the prefix cache; CachedTokens are.
	FreshTokens, CachedTokens, CompletionTokens int64
	// Price is the price applied; nil when the model had no price (cost 0, Unpriced true).
	Price    *store.Price
	Unpriced bool
	// CostMicros is the line's cost in micro-USD, rounded half up from the exact sum.
	CostMicros int64
}

// rate rates the usage of tenant (id; "" = all tenants, named name) in [since, until) with pb:
// one query per stretch between price changes, one line per model and stretch with usage.
func rate(ctx context.Context, st *store.Store, pb pricer, tenantID, name string, since, until time.Time) ([]BillLine, error) {
	cuts := append(append([]time.Time{since}, pb.boundaries(since, until)...), until)
	var out []BillLine
	for i := 0; i+1 < len(cuts); i++ {
		tots, err := st.UsageTotals(ctx, tenantID, cuts[i], cuts[i+1])
		if err != nil {
			return nil, err
		}
		for _, u := range tots {
			cached := min(u.CachedTokens, u.PromptTokens)
			l := BillLine{Tenant: name, Model: u.Model, From: cuts[i].In(since.Location()), Until: cuts[i+1].In(since.Location()), Requests: u.Requests,
				FreshTokens: u.PromptTokens - cached, CachedTokens: cached, CompletionTokens: u.CompletionTokens}
			if p, ok := pb.at(u.Model, cuts[i]); ok {
				l.Price = p
				l.CostMicros = microsRound(costPicos(p, u.PromptTokens, u.CachedTokens, u.CompletionTokens))
			} else {
				l.Unpriced = true
			}
			out = append(out, l)
		}
	}
	return out, nil
}

// BillCSVHeader is the header row of WriteBillCSV.
var BillCSVHeader = []string{"tenant", "model", "from", "until", "requests", "fresh_input_tokens", "cached_input_tokens",
	"output_tokens", "input_micros_per_m", "cached_micros_per_m", "output_micros_per_m", "cost_micros", "cost_usd"}

// WriteBillCSV writes lines as CSV (RFC 4180) with BillCSVHeader; times are RFC 3339 in their
// own zone; prices of an unpriced line are empty; cost_usd is cost_micros as a decimal string
// with six places (formatted from the integer, never through a float).
func WriteBillCSV(w io.Writer, lines []BillLine) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(BillCSVHeader)
	for _, l := range lines {
		in, ca, out := "", "", ""
		if l.Price != nil {
			in, ca, out = strconv.FormatInt(l.Price.InputMicros, 10), strconv.FormatInt(l.Price.CachedMicros, 10), strconv.FormatInt(l.Price.OutputMicros, 10)
		}
		_ = cw.Write([]string{l.Tenant, l.Model, l.From.Format(time.RFC3339), l.Until.Format(time.RFC3339),
			strconv.FormatInt(l.Requests, 10), strconv.FormatInt(l.FreshTokens, 10), strconv.FormatInt(l.CachedTokens, 10),
			strconv.FormatInt(l.CompletionTokens, 10), in, ca, out, strconv.FormatInt(l.CostMicros, 10), FormatMicros(l.CostMicros)})
	}
	cw.Flush()
	return cw.Error()
}

// FormatMicros renders micro-USD as dollars with six decimal places ("12.345678", "-0.000001").
func FormatMicros(m int64) string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-(m+1))+1
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/1_000_000, u%1_000_000)
}
