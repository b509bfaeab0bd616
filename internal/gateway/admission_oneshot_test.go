package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

// oneShotScenario runs a fixed sequence of admissions and settlements through g.admit (one
// gateway, one tenant) and returns one line per step: who refused and with what answer.
func oneShotScenario(t *testing.T, step bool) ([]string, *Gateway) {
	t.Helper()
	_, prefix := redisForTest(t)
	cfg := tierConfig(map[string]config.Policy{"t": {RPM: ptr64(4), TPM: ptr64(100), MaxConcurrent: ptr64(2), MonthlyTokens: ptr64(150),
		MonthlySpendMicros: ptr64(1 << 40)}}, "t")
	cfg.Admission.Backend, cfg.Admission.RedisURL, cfg.Admission.KeyPrefix = "redis", testRedisURL, prefix
	st := openTestStore(t)
	a := NewAdmin(st, testSecret)
	ctx := context.Background()
	_, err := a.CreateTenant(ctx, "acme", 0, 0, nil)
	require.NoError(t, err)
	key, _, err := a.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	_, err = a.SetPrice(ctx, "m1", time.Now().Add(-time.Hour), 1_000_000, 0, 1_000_000)
	require.NoError(t, err)
	g, err := New(cfg, st, testSecret, &canned{status: 200}, nil, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	g.stepAdmission = step
	p, err := g.auth.authenticate(ctx, http.Header{"Authorization": {"Bearer " + key}})
	require.NoError(t, err)

	var out []string
	try := func(est int64, strict bool) *ticket {
		h := http.Header{}
		tk, adm, err := g.admit(ctx, h, p, "m1", est, strict, est/2, est/2)
		line := fmt.Sprintf("est=%d rejected=%q tooLarge=%v retry=%v", est, adm.rejected, adm.tooLarge, h.Get(openai.HeaderRetryAfter) != "")
		if err == nil {
			// A refused request's charge is undone (step by step) or never made (one shot).
			line += fmt.Sprintf(" charged=%d", tk.charged)
		} else {
			var oe *openai.Error
			require.True(t, errors.As(err, &oe), err)
			line += fmt.Sprintf(" -> %d %s", oe.Status, oe.Code)
		}
		out = append(out, line)
		return tk
	}
	a1 := try(40, true) // admitted
	b1 := try(40, true) // admitted
	try(10, true)       // concurrency: two in flight
	a1.settle(ctx, 20, 0, 10)
	try(200, true) // larger than tpm: refused, spends nothing
	try(50, true)  // tokens: 40 + 30 + 50 > 100
	c1 := try(20, true)
	b1.settle(ctx, 30, 0, 10)
	c1.settle(ctx, 10, 0, 10)
	try(40, true) // quota: 30 + 40 + 20 used, + 40 > 150? no: requests limit (5th request) refuses first
	return out, g
}

// TestAdmitOneShotMatchesSteps: the one-round-trip admission answers a sequence of admissions
// exactly as the step-by-step path does (who refuses, with what status and code, whether a
// Retry-After is sent, what is charged), and counts the same metrics.
func TestAdmitOneShotMatchesSteps(t *testing.T) {
	steps, gs := oneShotScenario(t, true)
	one, g1 := oneShotScenario(t, false)
	require.Equal(t, steps, one)
	for _, l := range []string{"requests", "tokens", "concurrency"} {
		require.Equal(t, testutil.ToFloat64(gs.m.rateLimited.WithLabelValues(l)), testutil.ToFloat64(g1.m.rateLimited.WithLabelValues(l)), l)
	}
	require.Contains(t, one[2], "429 rate_limit_exceeded", "the concurrency refusal happened")
	require.Contains(t, one[3], `rejected="tokens" tooLarge=true`)
	require.Contains(t, one[4], `rejected="tokens" tooLarge=false`)
	t.Log(one)
}

// TestAdmitOneShotQuota: budgets are loaded from the ledger on first use, then reserved and
// refused in the one round trip, with insufficient_quota counted as before.
func TestAdmitOneShotQuota(t *testing.T) {
	_, prefix := redisForTest(t)
	cfg := tierConfig(map[string]config.Policy{"t": {MonthlyTokens: ptr64(100)}}, "t")
	cfg.Admission.Backend, cfg.Admission.RedisURL, cfg.Admission.KeyPrefix = "redis", testRedisURL, prefix
	st := openTestStore(t)
	a := NewAdmin(st, testSecret)
	ctx := context.Background()
	_, err := a.CreateTenant(ctx, "acme", 0, 0, nil)
	require.NoError(t, err)
	key, _, err := a.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	g, err := New(cfg, st, testSecret, &canned{status: 200}, nil, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	p, err := g.auth.authenticate(ctx, http.Header{"Authorization": {"Bearer " + key}})
	require.NoError(t, err)
	tk, _, err := g.admit(ctx, http.Header{}, p, "m1", 60, true, 30, 30)
	require.NoError(t, err)
	_, _, err = g.admit(ctx, http.Header{}, p, "m1", 60, true, 30, 30)
	require.Equal(t, errInsufficientQuota, err, "60 reserved + 60 > 100")
	tk.settle(ctx, 20, 0, 10) // actual 30
	tk2, _, err := g.admit(ctx, http.Header{}, p, "m1", 60, true, 30, 30)
	require.NoError(t, err, "30 used + 60 <= 100")
	tk2.cancel(ctx)
	require.Equal(t, 1.0, testutil.ToFloat64(g.m.quotaRefused.WithLabelValues("quota")))
}

// TestAdmitOneShotFailModes: with Redis unreachable, each enabled limit's fail-open setting
// decides, in admission order, as on the step-by-step path.
func TestAdmitOneShotFailModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   config.Policy
		failOpen map[string]bool
		wantErr  bool
	}{
		{"rates open", config.Policy{RPM: ptr64(5)}, nil, false},
		{"rates closed", config.Policy{RPM: ptr64(5)}, map[string]bool{"rates": false}, true},
		{"quota closed by default", config.Policy{RPM: ptr64(5), MonthlyTokens: ptr64(10)}, nil, true},
		{"quota opened", config.Policy{MonthlyTokens: ptr64(10)}, map[string]bool{"quota": true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tierConfig(map[string]config.Policy{"t": tc.policy}, "t")
			cfg.Admission.Backend, cfg.Admission.RedisURL, cfg.Admission.FailOpen = "redis", "redis://127.0.0.1:1/0", tc.failOpen
			st := openTestStore(t)
			a := NewAdmin(st, testSecret)
			ctx := context.Background()
			_, err := a.CreateTenant(ctx, "acme", 0, 0, nil)
			require.NoError(t, err)
			key, _, err := a.CreateKey(ctx, "acme", "")
			require.NoError(t, err)
			g, err := New(cfg, st, testSecret, &canned{status: 200}, nil, nil, nil)
			require.NoError(t, err)
			t.Cleanup(func() { g.Close() })
			p, err := g.auth.authenticate(ctx, http.Header{"Authorization": {"Bearer " + key}})
			require.NoError(t, err)
			_, _, err = g.admit(ctx, http.Header{}, p, "m1", 5, true, 1, 1)
			if tc.wantErr {
				require.Equal(t, errAdmissionUnavailable, err)
			} else {
				require.NoError(t, err)
			}
		})
	}
}
