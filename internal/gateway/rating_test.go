package gateway

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/store"
)

func TestMoneyArithmetic(t *testing.T) {
	p := &store.Price{InputMicros: 1_000_000, CachedMicros: 250_000, OutputMicros: 4_000_000}
	require.Equal(t, int64(2*1_000_000+250_000+4_000_000), costPicos(p, 3, 1, 1))
	require.Equal(t, int64(250_000*5), costPicos(p, 5, 9, 0), "cached beyond the prompt counts as the whole prompt")
	require.Equal(t, int64(math.MaxInt64), costPicos(&store.Price{OutputMicros: 1 << 40}, 0, 0, 1<<40), "saturates")
	for _, tc := range []struct{ picos, up, round int64 }{
		{0, 0, 0}, {1, 1, 0}, {499_999, 1, 0}, {500_000, 1, 1}, {1_000_000, 1, 1}, {1_500_000, 2, 2}, {1_499_999, 2, 1},
	} {
		require.Equal(t, tc.up, microsUp(tc.picos), tc.picos)
		require.Equal(t, tc.round, microsRound(tc.picos), tc.picos)
	}
	for m, s := range map[int64]string{0: "0.000000", 1: "0.000001", 12_345_678: "12.345678", -1: "-0.000001", math.MinInt64: "-9223372036854.775808"} {
		require.Equal(t, s, FormatMicros(m))
	}
}

// TestRatingGolden rates a month in Tokyo (UTC+9) across a price change at T, with cached-token
// pricing, an unpriced model, and records on both sides of both month boundaries.
func TestRatingGolden(t *testing.T) {
	st := openTestStore(t)
	a := NewAdmin(st, testSecret)
	ctx := context.Background()
	acme, err := a.CreateTenant(ctx, "acme", 0, 0, nil)
	require.NoError(t, err)
	_, err = a.CreateTenant(ctx, "other", 0, 0, nil)
	require.NoError(t, err)
	utc := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04:05.000", s)
		require.NoError(t, err)
		return v
	}
	T := utc("2026-03-15 12:00:00.000")
	_, err = a.SetPrice(ctx, "m", utc("2026-02-01 00:00:00.000"), 1_000_000, 250_000, 4_000_000)
	require.NoError(t, err)
	_, err = a.SetPrice(ctx, "m", T, 2_000_000, 500_000, 8_000_000)
	require.NoError(t, err)
	for _, r := range []struct {
		id, tenant, model, at    string
		prompt, cached, complete int64
	}{
		{"r1", acme.ID, "m", "2026-02-28 14:59:59.999", 1e6, 0, 1e6}, // Feb 28 23:59:59 in Tokyo: February
		{"r2", acme.ID, "m", "2026-02-28 15:00:00.000", 1000, 400, 100},
		{"r3", acme.ID, "m", "2026-03-15 11:59:59.999", 3, 1, 1},
		{"r4", acme.ID, "m", "2026-03-15 12:00:00.000", 10, 10, 0}, // at T: the new price
		{"r5", acme.ID, "m", "2026-03-31 14:59:59.999", 1, 0, 1},
		{"r6", acme.ID, "m", "2026-03-31 15:00:00.000", 1e6, 0, 1e6}, // April 1 in Tokyo
		{"r7", acme.ID, "n", "2026-03-10 00:00:00.000", 50, 0, 50},
		{"r8", "ten_other", "m", "2026-03-10 00:00:00.000", 1e6, 0, 1e6},
	} {
		_, err := st.InsertUsage(ctx, &store.UsageRecord{RequestID: r.id, TenantID: r.tenant, KeyID: "k", Model: r.model,
			PromptTokens: r.prompt, CachedTokens: r.cached, CompletionTokens: r.complete, Status: 200, Source: store.UsageEngine,
			CreatedAt: utc(r.at), BilledReason: store.BilledComplete})
		require.NoError(t, err)
	}
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)
	since, until, err := ParseMonth("2026-03", tokyo)
	require.NoError(t, err)
	lines, err := a.Bill(ctx, "acme", since, until)
	require.NoError(t, err)
	var csv bytes.Buffer
	require.NoError(t, WriteBillCSV(&csv, lines))
	// m before T: fresh 602 x 1 + cached 401 x 0.25 + output 101 x 4 = 1106.25 -> 1106.
	// m from T:   fresh 1 x 2 + cached 10 x 0.5 + output 1 x 8 = 15.
	require.Equal(t, `tenant,model,from,until,requests,fresh_input_tokens,cached_input_tokens,output_tokens,input_micros_per_m,cached_micros_per_m,output_micros_per_m,cost_micros,cost_usd
acme,m,2026-03-01T00:00:00+09:00,2026-03-15T21:00:00+09:00,2,602,401,101,1000000,250000,4000000,1106,0.001106
acme,n,2026-03-01T00:00:00+09:00,2026-03-15T21:00:00+09:00,1,50,0,50,,,,0,0.000000
acme,m,2026-03-15T21:00:00+09:00,2026-04-01T00:00:00+09:00,2,1,10,1,2000000,500000,8000000,15,0.000015
`, csv.String())
	require.True(t, lines[1].Unpriced)

	// A correction of the price book re-rates the period: the usage records are unchanged.
	_, err = a.SetPrice(ctx, "m", T, 2_000_000, 500_000, 16_000_000)
	require.NoError(t, err)
	lines, err = a.Bill(ctx, "acme", since, until)
	require.NoError(t, err)
	require.Equal(t, int64(23), lines[2].CostMicros)

	// Every tenant; an empty period is refused.
	lines, err = a.Bill(ctx, "", since, until)
	require.NoError(t, err)
	require.Len(t, lines, 3, "ten_other is not a tenant of the store: its record is billed to nobody")
	_, err = a.Bill(ctx, "acme", until, since)
	require.Error(t, err)
}

func TestMonth(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	p, start, end := Month(time.Date(2026, 11, 1, 3, 59, 0, 0, time.UTC), ny) // Oct 31 23:59 EDT
	require.Equal(t, "2026-10", p)
	require.Equal(t, time.Date(2026, 10, 1, 4, 0, 0, 0, time.UTC), start.UTC())
	require.Equal(t, time.Date(2026, 11, 1, 4, 0, 0, 0, time.UTC), end.UTC())
	p, _, end = Month(time.Date(2026, 11, 1, 4, 0, 0, 0, time.UTC), ny)
	require.Equal(t, "2026-11", p)
	require.Equal(t, time.Date(2026, 12, 1, 5, 0, 0, 0, time.UTC), end.UTC(), "EST after the DST change")
	_, _, err = ParseMonth("2026-13", ny)
	require.Error(t, err)
}

// TestTieredBookAndGPURating: a tier's entry overrides the general price of its model from its
// own effective time on (the general book before it), both books' changes cut the period, and
// GPU cost is duration x hourly price rounded half up, per stretch of constant GPU price.
func TestTieredBookAndGPURating(t *testing.T) {
	base := newPriceBook([]store.Price{{Model: "m", EffectiveAt: t0, InputMicros: 10}, {Model: "m", EffectiveAt: t0.Add(2 * time.Hour), InputMicros: 30}})
	books := newPriceBooks([]store.Price{{Model: "m", EffectiveAt: t0, InputMicros: 10}, {Model: "m", EffectiveAt: t0.Add(2 * time.Hour), InputMicros: 30}},
		[]store.TierPrice{{Tier: "gold", Price: store.Price{Model: "m", EffectiveAt: t0.Add(time.Hour), InputMicros: 5}}})
	gold := books.forTier("gold")
	for _, tc := range []struct {
		at   time.Duration
		want int64
	}{{0, 10}, {time.Hour, 5}, {3 * time.Hour, 5}} {
		p, ok := gold.at("m", t0.Add(tc.at))
		require.True(t, ok)
		require.Equal(t, tc.want, p.InputMicros, tc.at)
	}
	p, _ := books.forTier("silver").at("m", t0.Add(3*time.Hour))
	require.Equal(t, int64(30), p.InputMicros, "a tier without entries uses the general book")
	require.Equal(t, []time.Time{t0.Add(time.Hour), t0.Add(2 * time.Hour)}, gold.boundaries(t0, t0.Add(4*time.Hour)))
	require.Equal(t, base.boundaries(t0, t0.Add(4*time.Hour)), books.forTier("").boundaries(t0, t0.Add(4*time.Hour)))

	st := openTestStore(t)
	ctx := context.Background()
	for i, d := range []time.Duration{1500 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		_, err := st.InsertUsage(ctx, &store.UsageRecord{RequestID: fmt.Sprint(i), TenantID: "ten", KeyID: "k", Model: "m", GPU: "H100",
			Duration: d, Status: 200, Source: store.UsageEngine, CreatedAt: t0.Add(time.Duration(i) * time.Hour)})
		require.NoError(t, err)
	}
	costs := []store.GPUCost{{GPU: "H100", EffectiveAt: t0, MicrosPerHour: 1_000_000}, {GPU: "H100", EffectiveAt: t0.Add(90 * time.Minute), MicrosPerHour: 3_600_000}}
	lines, err := rateGPU(ctx, st, costs, "ten", t0, t0.Add(3*time.Hour))
	require.NoError(t, err)
	require.Len(t, lines, 2)
	// 2 s at $1/h = 555.55... micro-USD -> 556; 1 s at $3.60/h = 1000.
	require.Equal(t, int64(2000), lines[0].DurationMillis)
	require.Equal(t, int64(556), lines[0].CostMicros)
	require.Equal(t, int64(1000), lines[1].CostMicros)
	unpriced, err := rateGPU(ctx, st, nil, "ten", t0, t0.Add(3*time.Hour))
	require.NoError(t, err)
	require.True(t, unpriced[0].Unpriced)
	require.Zero(t, unpriced[0].CostMicros)
}
