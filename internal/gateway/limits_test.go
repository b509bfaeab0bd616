package gateway

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	testclock "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/openai"
)

func TestGCRA(t *testing.T) {
	clk := testclock.NewFakePassiveClock(t0)
	l := newLimiter(clk)
	// 60 rpm: a burst of 60, then one per second.
	for i := range 60 {
		a := l.admit("t", 60, 0, 0, false)
		require.Empty(t, a.rejected, "request %d", i)
		require.Equal(t, 59-i, a.requests.remaining)
	}
	a := l.admit("t", 60, 0, 0, false)
	require.Equal(t, "requests", a.rejected)
	require.Equal(t, time.Second, a.retryAfter())
	require.Equal(t, time.Minute, a.requests.reset)
	clk.SetTime(t0.Add(999 * time.Millisecond))
	require.Equal(t, "requests", l.admit("t", 60, 0, 0, false).rejected)
	clk.SetTime(t0.Add(time.Second))
	require.Empty(t, l.admit("t", 60, 0, 0, false).rejected)
	// Tenants are independent; 0 is unlimited.
	require.Empty(t, l.admit("u", 60, 0, 0, false).rejected)
	for range 1000 {
		require.Empty(t, l.admit("v", 0, 0, 1e9, false).rejected)
	}
	// A refused token request spends no request either.
	clk.SetTime(t0)
	b := l.admit("w", 10, 100, 100, true)
	require.Empty(t, b.rejected)
	b = l.admit("w", 10, 100, 1, true)
	require.Equal(t, "tokens", b.rejected)
	require.Equal(t, 9, b.requests.remaining)
	b = l.admit("w", 10, 0, 0, true)
	require.Equal(t, 8, b.requests.remaining)
	b = l.admit("w", 10, 100, 1000, true)
	require.True(t, b.tooLarge)
	require.Equal(t, 8, b.requests.remaining)
}

func TestSettle(t *testing.T) {
	clk := testclock.NewFakePassiveClock(t0)
	l := newLimiter(clk)
	a := l.admit("t", 0, 600, 300, true)
	require.Equal(t, int64(300), a.charged)
	require.Equal(t, 300, a.tokens.remaining)
	l.settle("t", 600, 300, 100) // refund 200
	require.Equal(t, 500, l.admit("t", 0, 600, 0, true).tokens.remaining)
	l.settle("t", 600, 0, 2000) // overrun: debt beyond the window
	v := l.admit("t", 0, 600, 0, true).tokens
	require.Equal(t, 0, v.remaining)
	require.Equal(t, 3*time.Minute+30*time.Second, v.reset) // 100 spent + 2000 owed at 10 per second
	l.settle("t", 600, 10000, 0)                            // a refund never goes below empty
	require.Equal(t, 600, l.admit("t", 0, 600, 0, true).tokens.remaining)
	l.settle("unknown", 600, 1, 2) // no bucket: nothing to settle
}

func TestFormatReset(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                       "0s",
		-time.Second:            "0s",
		time.Microsecond:        "1ms",
		120 * time.Millisecond:  "120ms",
		time.Second:             "1s",
		6 * time.Minute:         "6m0s",
		1500 * time.Microsecond: "2ms",
	} {
		require.Equal(t, want, formatReset(d), d.String())
	}
	require.Equal(t, "1", retryAfterSeconds(time.Millisecond))
	require.Equal(t, "2", retryAfterSeconds(1001*time.Millisecond))
}

func TestMulDiv(t *testing.T) {
	require.Equal(t, int64(30e9), mulDiv(1, int64(time.Minute), 2))
	require.Equal(t, int64(math.MaxInt64), mulDiv(math.MaxInt64, math.MaxInt64, 1))
	require.Equal(t, int64(2e18), mulDiv(4e18, 4e18, 8e18))
}

func TestEstimateTokensSaturates(t *testing.T) {
	limit, n := math.MaxInt, math.MaxInt
	req := &openai.InferenceRequest{Model: "m", Prompt: []byte(`"abcd"`), MaxTokens: &limit, N: &n}
	got, strict := estimateTokens(openai.PathCompletions, req)
	require.True(t, strict)
	require.Equal(t, int64(math.MaxInt64), got)
	one := 1
	req.N = &one
	got, _ = estimateTokens(openai.PathCompletions, req)
	require.Equal(t, int64(math.MaxInt64), got)
	req.MaxTokens = nil
	got, strict = estimateTokens(openai.PathCompletions, req)
	require.False(t, strict)
	require.Equal(t, int64(1+DefaultOutputEstimate), got)
	got, strict = estimateTokens(openai.PathEmbeddings, &openai.InferenceRequest{Input: []byte(`"abcdefgh"`)})
	require.True(t, strict)
	require.Equal(t, int64(2), got)
}
