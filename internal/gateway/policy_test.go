package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

func sp(s string) *string { return &s }

func TestResolvePolicy(t *testing.T) {
	cfg := &config.Gateway{DefaultTier: "free", Tiers: map[string]config.Policy{
		"free": {Models: []string{"small"}, RPM: ptr64(10), TPM: ptr64(1000), MaxTokensCap: ptr64(256), Objective: sp("batch")},
		"pro":  {Models: []string{"*"}, RPM: ptr64(600), MonthlySpendMicros: ptr64(50_000_000), Objective: sp("interactive")},
	}}
	ten := func(tier string, rpm int, models []string, p config.Policy) *store.Tenant {
		return &store.Tenant{ID: "ten_1", Tier: tier, RPM: rpm, Models: models, Policy: p}
	}
	key := func(p config.Policy) *store.APIKey { return &store.APIKey{ID: "key_1", Policy: p} }
	for _, tc := range []struct {
		name string
		t    *store.Tenant
		k    *store.APIKey
		want policy
	}{
		{"default tier", ten("", 0, nil, config.Policy{}), key(config.Policy{}),
			policy{tier: "free", models: []string{"small"}, rpm: 10, tpm: 1000, maxTokensCap: 256, objective: "batch", rateBucket: "t:ten_1"}},
		{"unknown tier falls back to the default", ten("gold", 0, nil, config.Policy{}), key(config.Policy{}),
			policy{tier: "free", models: []string{"small"}, rpm: 10, tpm: 1000, maxTokensCap: 256, objective: "batch", rateBucket: "t:ten_1"}},
		{"pro: every model", ten("pro", 0, nil, config.Policy{}), key(config.Policy{}),
			policy{tier: "pro", rpm: 600, monthlySpend: 50_000_000, objective: "interactive", rateBucket: "t:ten_1"}},
		{"legacy columns override the tier", ten("free", 99, []string{"a", "b"}, config.Policy{}), key(config.Policy{}),
			policy{tier: "free", models: []string{"a", "b"}, rpm: 99, tpm: 1000, maxTokensCap: 256, objective: "batch", rateBucket: "t:ten_1"}},
		{"tenant policy overrides legacy, 0 turns a limit off", ten("free", 99, nil, config.Policy{RPM: ptr64(0), Objective: sp("")}), key(config.Policy{}),
			policy{tier: "free", models: []string{"small"}, tpm: 1000, maxTokensCap: 256, rateBucket: "t:ten_1"}},
		{"key overrides tenant, own rate bucket", ten("pro", 0, nil, config.Policy{MaxConcurrent: ptr64(4)}),
			key(config.Policy{TPM: ptr64(50), Models: []string{"tiny"}, MonthlyTokens: ptr64(7)}),
			policy{tier: "pro", models: []string{"tiny"}, rpm: 600, tpm: 50, maxConcurrent: 4, monthlyTokens: 7, monthlySpend: 50_000_000,
				objective: "interactive", rateBucket: "k:key_1"}},
		{"no tiers at all", ten("", 0, nil, config.Policy{}), key(config.Policy{}), policy{rateBucket: "t:ten_1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.name == "no tiers at all" {
				c = &config.Gateway{}
			}
			require.Equal(t, tc.want, resolvePolicy(c, tc.t, tc.k))
		})
	}
}

func TestSetOutputLimit(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"model":"m"}`, `{"model":"m","max_tokens":5}`},
		{`{}`, `{"max_tokens":5}`},
		{` { } `, ` { "max_tokens":5} `},
		{`{"max_tokens":900,"model":"m"}`, `{"model":"m","max_tokens":5}`},
		{`{"model":"m", "MAX_TOKENS": 1 ,"x":2}`, `{"model":"m" ,"x":2,"max_tokens":5}`},
		{`{"max_tokens":1,"Max_Completion_Tokens":2,"model":"m","max_tokens":3}`, `{"model":"m","max_tokens":5}`},
		{`{"max_tokens":1}`, `{"max_tokens":5}`},
		{`{"a":{"max_tokens":1},"max_completion_tokens":2}`, `{"a":{"max_tokens":1},"max_tokens":5}`},
	} {
		got, err := setOutputLimit([]byte(tc.in), 5)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, string(got), tc.in)
	}
	for _, bad := range []string{`[]`, `{"a":`, `nope`} {
		_, err := setOutputLimit([]byte(bad), 5)
		require.Error(t, err, bad)
	}
}

// FuzzSetOutputLimit: for any JSON object, the rewrite is valid JSON whose only output limit (any
// spelling) is max_tokens = n, and whose other top-level members are unchanged.
func FuzzSetOutputLimit(f *testing.F) {
	for _, s := range []string{`{"model":"m","max_tokens":3}`, `{"MAX_TOKENS":1,"max_completion_tokens":2}`, `{}`, `{"a":[1,{"max_tokens":2}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var before map[string]json.RawMessage
		if json.Unmarshal(b, &before) != nil || before == nil {
			return
		}
		out, err := setOutputLimit(b, 42)
		require.NoError(t, err)
		var after map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(out, &after))
		for k, v := range after {
			if strings.EqualFold(k, "max_tokens") || strings.EqualFold(k, "max_completion_tokens") {
				require.Equal(t, "max_tokens", k)
				require.Equal(t, "42", string(v))
				continue
			}
			require.Contains(t, before, k)
		}
	})
}

func tierConfig(tiers map[string]config.Policy, def string) config.Gateway {
	cfg := config.Default().Gateway
	cfg.Tiers, cfg.DefaultTier = tiers, def
	return cfg
}

func TestTierPolicyThroughGateway(t *testing.T) {
	cfg := tierConfig(map[string]config.Policy{
		"gold": {Models: []string{"m1"}, MaxTokensDefault: ptr64(64), MaxTokensCap: ptr64(128), Objective: sp("interactive")},
	}, "gold")
	h := newHarnessCfg(t, cfg, 0, 0)
	ctx := context.Background()

	w := h.do("POST", openai.PathChatCompletions, `{"model":"m2","messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, 404, w.Code, "the tier's allowlist")

	w = h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderObjective, "critical")
	require.Equal(t, 200, w.Code)
	seen := h.eng.seen()
	last := seen[len(seen)-1]
	require.Equal(t, "interactive", last.header.Get(openai.HeaderObjective), "the tier's objective, never the caller's")
	require.JSONEq(t, `{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":64}`, string(last.body))

	w = h.do("POST", openai.PathChatCompletions, `{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":129}`)
	require.Equal(t, 400, w.Code)
	require.Contains(t, w.Body.String(), `"param":"max_completion_tokens"`)
	require.Len(t, h.eng.seen(), len(seen), "a refused request never reaches the engine")

	w = h.do("POST", openai.PathChatCompletions, `{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":100}`)
	require.Equal(t, 200, w.Code)
	seen = h.eng.seen()
	require.JSONEq(t, `{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":100}`, string(seen[len(seen)-1].body))

	// Overrides: the key may use every model; the tenant gets another objective and no cap.
	require.NoError(t, h.admin.SetKeyPolicy(ctx, h.keyRec.ID, config.Policy{Models: []string{"*"}}))
	require.NoError(t, h.admin.SetTenantPolicy(ctx, "acme", "gold", config.Policy{Objective: sp("batch"), MaxTokensCap: ptr64(0), MaxTokensDefault: ptr64(0)}))
	h.clk.Step(AuthCacheTTL)
	w = h.do("POST", openai.PathChatCompletions, `{"model":"m2","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}`)
	require.Equal(t, 200, w.Code, w.Body.String())
	seen = h.eng.seen()
	require.Equal(t, "batch", seen[len(seen)-1].header.Get(openai.HeaderObjective))
	require.JSONEq(t, `{"model":"m2","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}`, string(seen[len(seen)-1].body), "no policy on output: body unchanged")

	// Out-of-range policy values are refused naming the field.
	err := h.admin.SetTenantPolicy(ctx, "acme", "", config.Policy{RPM: ptr64(-1)})
	require.ErrorContains(t, err, "rpm: must be between 0")
	err = h.admin.SetKeyPolicy(ctx, h.keyRec.ID, config.Policy{MaxTokensDefault: ptr64(10), MaxTokensCap: ptr64(5)})
	require.ErrorContains(t, err, "max_tokens_default")
}

func TestMonthlyTokenQuota(t *testing.T) {
	cfg := tierConfig(map[string]config.Policy{"q": {MonthlyTokens: ptr64(100)}}, "q")
	cfg.BillingTimeZone = "America/New_York"
	h := newHarnessCfg(t, cfg, 0, 0)
	h.eng.set(func(e *fakeEngine) {
		e.usage = openai.Usage{PromptTokens: 10, CompletionTokens: 10, TotalTokens: 20}
	})
	body := chatBody("m1", 10, 20, "") // reserves 30, uses 20
	for i := range 4 {                 // 20, 40, 60, 80 used
		require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, body).Code, "request %d", i)
	}
	w := h.do("POST", openai.PathChatCompletions, body) // 80 + 30 > 100
	require.Equal(t, 429, w.Code)
	require.JSONEq(t, errorBody(errInsufficientQuota), w.Body.String())
	require.Empty(t, w.Header().Get(openai.HeaderRetryAfter), "waiting does not help")
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, chatBody("m1", 10, 10, "")).Code, "a smaller request still fits: 80 + 20")
	require.Equal(t, 429, h.do("POST", openai.PathChatCompletions, chatBody("m1", 2, 1, "")).Code, "100 used: nothing fits")

	// Durable: a new gateway over the same ledger knows the month's usage.
	g2, err := New(cfg, h.st, testSecret, h.gw.next, h.clk, nil, nil)
	require.NoError(t, err)
	h.gw = g2
	require.Equal(t, 429, h.do("POST", openai.PathChatCompletions, chatBody("m1", 2, 1, "")).Code)

	// The month ends at midnight in New York: 04:00 UTC on April 1 (EDT).
	h.clk.SetTime(time.Date(2026, 4, 1, 3, 59, 0, 0, time.UTC))
	require.Equal(t, 429, h.do("POST", openai.PathChatCompletions, body).Code, "still March in New York")
	h.clk.SetTime(time.Date(2026, 4, 1, 4, 0, 0, 0, time.UTC))
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, body).Code, "April in New York")
}

func TestTierConfigYAML(t *testing.T) {
	cfg := config.Default()
	require.NoError(t, config.Parse([]byte(`
gateway:
  default_tier: free
  billing_time_zone: Europe/Berlin
  tiers:
    free: {models: [small], rpm: 10, tpm: 10000, max_concurrent: 2, monthly_tokens: 1000000,
           monthly_spend_micros: 5000000, max_tokens_default: 256, max_tokens_cap: 1024, objective: batch}
  admission: {backend: redis, redis_url: "redis://127.0.0.1:6379/2", fail_open: {spend: true}}
`), cfg))
	require.NoError(t, cfg.Finish())
	g := cfg.Gateway
	require.Equal(t, config.Policy{Models: []string{"small"}, RPM: ptr64(10), TPM: ptr64(10000), MaxConcurrent: ptr64(2),
		MonthlyTokens: ptr64(1_000_000), MonthlySpendMicros: ptr64(5_000_000), MaxTokensDefault: ptr64(256), MaxTokensCap: ptr64(1024),
		Objective: sp("batch")}, g.Tiers["free"])
	require.True(t, g.Admission.FailsOpen("spend"))
	require.True(t, g.Admission.FailsOpen("rates"))
	require.False(t, g.Admission.FailsOpen("quota"))
	require.Equal(t, 10*time.Minute, g.Admission.ReservationTTL.D())
	loc, err := g.Location()
	require.NoError(t, err)
	require.Equal(t, "Europe/Berlin", loc.String())
}
