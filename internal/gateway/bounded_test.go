package gateway

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	testclock "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// randomEngine answers every chat completion like vLLM, non-streaming, with 17 prompt tokens and
// 1 to 10 completion tokens at random.
type randomEngine struct{}

func (randomEngine) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	u := openai.Usage{PromptTokens: 17, CompletionTokens: 1 + rand.IntN(10)}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	h := http.Header{"Content-Type": {"application/json"}, http.CanonicalHeaderKey(openai.HeaderEndpointServed): {engineServed}}
	return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(bytes.NewReader(vllmBody(openai.PathChatCompletions, "m1", u)))}, nil
}

// TestBoundedAdmissionRedis: 500 concurrent requests against a spend cap through 3 gateway
// instances sharing Redis and the ledger. Each request may cost at most 17 + 2*10 = 37 micro-USD
// (its reservation); the spend accepted never exceeds the cap (the documented bound is the cap
// plus one request's maximum), and once the budget is exhausted nothing more is admitted.
func TestBoundedAdmissionRedis(t *testing.T) {
	_, prefix := redisForTest(t)
	const spendCap, perRequestMax = 1000, 37
	cfg := tierConfig(map[string]config.Policy{"capped": {MonthlySpendMicros: ptr64(spendCap), MaxTokensCap: ptr64(10)}}, "capped")
	cfg.Admission.Backend, cfg.Admission.RedisURL, cfg.Admission.KeyPrefix = "redis", testRedisURL, prefix
	st := openTestStore(t)
	clk := testclock.NewFakeClock(t0)
	admin := NewAdmin(st, testSecret)
	ctx := context.Background()
	_, err := admin.CreateTenant(ctx, "acme", 0, 0, nil)
	require.NoError(t, err)
	key, _, err := admin.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	_, err = admin.SetPrice(ctx, "m1", t0.Add(-time.Hour), 1_000_000, 0, 2_000_000) // 1 and 2 micro-USD per token
	require.NoError(t, err)
	var gws []*Gateway
	for range 3 {
		g, err := New(cfg, st, testSecret, randomEngine{}, clk, nil, nil)
		require.NoError(t, err)
		t.Cleanup(func() { g.Close() })
		gws = append(gws, g)
	}
	body := chatBody("m1", 17, 10, "")
	send := func(g *Gateway) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", openai.PathChatCompletions, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w
	}
	var ok, quota, unavailable, notRecorded, other atomic.Int64
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Go(func() {
			switch w := send(gws[i%3]); {
			case w.Code == 200:
				ok.Add(1)
			case w.Code == 429 && strings.Contains(w.Body.String(), `"code":"insufficient_quota"`):
				quota.Add(1)
			case w.Code == 503 && strings.Contains(w.Body.String(), `"code":"usage_not_recorded"`):
				notRecorded.Add(1) // the ledger commit timed out on a loaded machine: answer withheld, nothing billed
			case w.Code == 503: // Redis unreachable (a loaded machine): spend fails closed
				unavailable.Add(1)
			default:
				other.Add(1)
				t.Errorf("unexpected answer %d %s", w.Code, w.Body.String())
			}
		})
	}
	wg.Wait()
	require.Zero(t, other.Load())
	backendErrors := func() float64 {
		var n float64
		for _, g := range gws {
			for _, l := range []string{"rates", "concurrency", "quota", "spend"} {
				n += testutil.ToFloat64(g.m.backendErrors.WithLabelValues(l))
			}
		}
		return n
	}
	require.Equal(t, float64(unavailable.Load()) > 0, backendErrors() > 0, "a 503 only when Redis could not be reached")
	require.Positive(t, ok.Load())
	require.Positive(t, quota.Load())

	spent := func() int64 {
		recs, err := st.ListUsage(ctx, store.UsageFilter{})
		require.NoError(t, err)
		var sum int64
		for _, u := range recs {
			sum += u.PromptTokens*1 + u.CompletionTokens*2
		}
		return sum
	}
	require.LessOrEqual(t, spent(), int64(spendCap+perRequestMax))
	require.LessOrEqual(t, spent(), int64(spendCap), "every request's cost is within its reservation")

	// Drain what is left one request at a time; after the first refusal nothing is admitted.
	for i := 0; ; i++ {
		require.Less(t, i, 200)
		if w := send(gws[i%3]); w.Code == 429 {
			break
		}
	}
	for i := range 30 {
		w := send(gws[i%3])
		require.NotEqual(t, 200, w.Code, "nothing is admitted after exhaustion")
		if w.Code != 503 {
			require.Equal(t, 429, w.Code)
			require.Contains(t, w.Body.String(), `"code":"insufficient_quota"`)
		}
	}
	require.LessOrEqual(t, spent(), int64(spendCap))
	if backendErrors() == 0 {
		// Liveness, when Redis answered every call: no reservation leaked, the budget is used up
		// to less than one request's maximum.
		require.Greater(t, spent(), int64(spendCap-perRequestMax))
	} else {
		t.Logf("Redis was unreachable %v times (loaded machine): reservations not settled wait for their TTL; liveness not checked", backendErrors())
	}
}

func TestAdmissionFailModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   config.Policy
		failOpen map[string]bool
		want     int
		limit    string // the metric label counted
		open     bool
	}{
		{"rates fail open by default", config.Policy{RPM: ptr64(5)}, nil, 200, "rates", true},
		{"rates may fail closed", config.Policy{RPM: ptr64(5)}, map[string]bool{"rates": false}, 503, "rates", false},
		{"concurrency fails open by default", config.Policy{MaxConcurrent: ptr64(1)}, nil, 200, "concurrency", true},
		{"spend fails closed by default", config.Policy{MonthlySpendMicros: ptr64(100)}, nil, 503, "spend", false},
		{"quota fails closed by default", config.Policy{MonthlyTokens: ptr64(100)}, nil, 503, "quota", false},
		{"spend may fail open", config.Policy{MonthlySpendMicros: ptr64(100)}, map[string]bool{"spend": true}, 200, "spend", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tierConfig(map[string]config.Policy{"t": tc.policy}, "t")
			cfg.Admission.Backend, cfg.Admission.RedisURL, cfg.Admission.FailOpen = "redis", "redis://127.0.0.1:1/0", tc.failOpen
			h := newHarnessCfg(t, cfg, 0, 0)
			t.Cleanup(func() { h.gw.Close() })
			w := h.do("POST", openai.PathChatCompletions, simpleChat)
			require.Equal(t, tc.want, w.Code, w.Body.String())
			if tc.want == 503 {
				require.JSONEq(t, errorBody(errAdmissionUnavailable), w.Body.String())
				require.Empty(t, h.usage())
			}
			require.Equal(t, 1.0, testutil.ToFloat64(h.gw.m.backendErrors.WithLabelValues(tc.limit)))
			require.Equal(t, map[bool]float64{true: 1, false: 0}[tc.open], testutil.ToFloat64(h.gw.m.failedOpen.WithLabelValues(tc.limit)))
		})
	}
}

func TestSpendCapMemory(t *testing.T) {
	cfg := tierConfig(map[string]config.Policy{"c": {MonthlySpendMicros: ptr64(100)}}, "c")
	h := newHarnessCfg(t, cfg, 0, 0)
	ctx := context.Background()
	// Unpriced: the model costs nothing and the cap does not bite.
	for range 3 {
		require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, chatBody("m1", 10, 10, "")).Code)
	}
	_, err := h.admin.SetPrice(ctx, "m1", t0, 1_000_000, 500_000, 2_000_000)
	require.NoError(t, err)
	h.clk.Step(5 * time.Second) // the price book cache
	// Engine usage: 17 prompt (16 cached) + 3 completion = 1 + 8 + 6 = 15 micro-USD; reservation
	// 10 + 2*10 = 30.
	for i := range 5 { // 15 .. 75
		require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, chatBody("m1", 10, 10, "")).Code, "request %d", i)
	}
	w := h.do("POST", openai.PathChatCompletions, chatBody("m1", 10, 10, "")) // 75 + 30 > 100
	require.Equal(t, 429, w.Code)
	require.Contains(t, w.Body.String(), `"type":"insufficient_quota"`)
	require.Equal(t, 1.0, testutil.ToFloat64(h.gw.m.quotaRefused.WithLabelValues("spend")))
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, chatBody("m1", 10, 5, "")).Code, "75 + 20 fits")
}

// blockingEngine holds every request until release is closed, telling entered when it arrives.
type blockingEngine struct {
	entered chan struct{}
	release chan struct{}
}

func (e *blockingEngine) RoundTrip(r *http.Request) (*http.Response, error) {
	e.entered <- struct{}{}
	<-e.release
	return randomEngine{}.RoundTrip(r)
}

func TestMaxConcurrentThroughGateway(t *testing.T) {
	cfg := tierConfig(map[string]config.Policy{"one": {MaxConcurrent: ptr64(1)}}, "one")
	st := openTestStore(t)
	a := NewAdmin(st, testSecret)
	ctx := context.Background()
	_, err := a.CreateTenant(ctx, "acme", 0, 0, nil)
	require.NoError(t, err)
	key, _, err := a.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	eng := &blockingEngine{entered: make(chan struct{}, 4), release: make(chan struct{})}
	g, err := New(cfg, st, testSecret, eng, testclock.NewFakeClock(t0), nil, nil)
	require.NoError(t, err)
	send := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", openai.PathChatCompletions, strings.NewReader(simpleChat))
		r.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w
	}
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- send() }()
	<-eng.entered // the first request holds the only slot
	w := send()
	require.Equal(t, 429, w.Code)
	require.Contains(t, w.Body.String(), `"code":"rate_limit_exceeded"`)
	require.Contains(t, w.Body.String(), "Too many concurrent requests")
	require.Equal(t, "1", w.Header().Get(openai.HeaderRetryAfter))
	close(eng.release)
	require.Equal(t, 200, (<-first).Code)
	require.Equal(t, 200, send().Code, "the slot was released at completion")
	require.Equal(t, 1.0, testutil.ToFloat64(g.m.rateLimited.WithLabelValues("concurrency")))
}

func TestAdminActionsAreAudited(t *testing.T) {
	st := openTestStore(t)
	a := NewAdmin(st, testSecret).WithActor("ops@example.com")
	ctx := context.Background()
	_, err := a.CreateTenant(ctx, "acme", 1, 2, []string{"m"})
	require.NoError(t, err)
	_, k, err := a.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	require.NoError(t, a.SetTenantPolicy(ctx, "acme", "gold", config.Policy{RPM: ptr64(3)}))
	require.NoError(t, a.SetKeyPolicy(ctx, k.ID, config.Policy{TPM: ptr64(4)}))
	_, err = a.SetPrice(ctx, "m", t0, 1, 2, 3)
	require.NoError(t, err)
	require.NoError(t, a.RevokeKey(ctx, k.ID))
	require.Error(t, a.SetTenantPolicy(ctx, "acme", "", config.Policy{RPM: ptr64(-1)}), "refused: not audited")
	es, err := a.Audit(ctx)
	require.NoError(t, err)
	var got []string
	for _, e := range es {
		require.Equal(t, "ops@example.com", e.Actor)
		got = append(got, e.Action+" "+e.Target)
	}
	require.Equal(t, []string{"tenant.create acme", "key.create " + k.ID, "tenant.policy acme", "key.policy " + k.ID, "price.set m", "key.revoke " + k.ID}, got)
	n, err := a.VerifyAudit(ctx)
	require.NoError(t, err)
	require.Equal(t, 6, n)
}
