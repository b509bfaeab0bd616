package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	testclock "k8s.io/utils/clock/testing"
)

// testRedisURL is the real Redis the Redis backend is tested against.
const testRedisURL = "redis://127.0.0.1:6379/0"

// redisForTest returns a Redis backend with a key prefix of its own (so reruns and parallel
// packages never share state), or skips the test with a message when Redis is unreachable.
func redisForTest(t testing.TB) (*redisBackend, string) {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "strata:test:" + hex.EncodeToString(b) + ":"
	rb, err := newRedisBackend(testRedisURL, prefix)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rb.rdb.Ping(ctx).Err(); err != nil {
		rb.Close()
		t.Skipf("Redis at %s unreachable, skipping: %v", testRedisURL, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, pat := range []string{prefix + "*", redisRatePrefix + prefix + "*"} {
			keys, _ := rb.rdb.Keys(ctx, pat).Result()
			if len(keys) > 0 {
				rb.rdb.Del(ctx, keys...)
			}
		}
		rb.Close()
	})
	return rb, prefix
}

// shortTTL is the lease of the expiry tests. Redis keeps its own time, so there it is real time:
// long enough that a loaded machine does not let a lease expire before the test has looked at
// it, short enough to wait out.
const shortTTL = time.Second

// eachBackend runs fn against the memory backend (advance steps its fake clock) and the Redis
// backend (advance sleeps: Redis keeps its own time; only used to wait out shortTTL).
func eachBackend(t *testing.T, fn func(t *testing.T, be backend, advance func(time.Duration))) {
	t.Run("memory", func(t *testing.T) {
		clk := testclock.NewFakeClock(t0)
		fn(t, newMemoryBackend(clk), clk.Step)
	})
	t.Run("redis", func(t *testing.T) {
		rb, _ := redisForTest(t)
		fn(t, rb, time.Sleep)
	})
}

func TestBackendRates(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend, _ func(time.Duration)) {
		ctx := context.Background()
		for i := range 3 {
			a, err := be.admitRates(ctx, "b", 3, 0, 0, false)
			require.NoError(t, err)
			require.Empty(t, a.rejected, "request %d", i)
			require.Equal(t, 3, a.requests.limit)
		}
		a, err := be.admitRates(ctx, "b", 3, 0, 0, false)
		require.NoError(t, err)
		require.Equal(t, "requests", a.rejected)
		require.Positive(t, a.retryAfter())
		a, err = be.admitRates(ctx, "other", 3, 0, 0, false)
		require.NoError(t, err)
		require.Empty(t, a.rejected, "buckets are independent")

		// Tokens: 100 per minute. A refused token request gives its request back.
		a, err = be.admitRates(ctx, "t", 1000, 100, 60, true)
		require.NoError(t, err)
		require.Empty(t, a.rejected)
		require.Equal(t, int64(60), a.charged)
		a, err = be.admitRates(ctx, "t", 1000, 100, 60, true)
		require.NoError(t, err)
		require.Equal(t, "tokens", a.rejected)
		// redis_rate computes remaining in floating point: 998.99... may floor to 998.
		require.InDelta(t, 999, a.requests.remaining, 1, "the refused request spent nothing")
		a, err = be.admitRates(ctx, "t", 1000, 100, 150, true)
		require.NoError(t, err)
		require.True(t, a.tooLarge)

		// Settlement refunds: 60 charged, 10 used; 85 then fits (10 + 85 <= 100), and not before.
		require.NoError(t, be.settleRates(ctx, "t", 100, 60, 10))
		a, err = be.admitRates(ctx, "t", 0, 100, 85, true)
		require.NoError(t, err)
		require.Empty(t, a.rejected)
		// An overrun is debt: 95 charged, 400 used leaves nothing for a minute.
		require.NoError(t, be.settleRates(ctx, "t", 100, 85, 400))
		a, err = be.admitRates(ctx, "t", 0, 100, 1, true)
		require.NoError(t, err)
		require.Equal(t, "tokens", a.rejected)
		require.Greater(t, a.tokens.retry, time.Minute, "debt beyond the window")
	})
}

func TestBackendConcurrency(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend, advance func(time.Duration)) {
		ctx := context.Background()
		for _, id := range []string{"a", "b"} {
			ok, err := be.acquire(ctx, "c", id, 2, time.Minute)
			require.NoError(t, err)
			require.True(t, ok)
		}
		ok, err := be.acquire(ctx, "c", "x", 2, time.Minute)
		require.NoError(t, err)
		require.False(t, ok)
		require.NoError(t, be.release(ctx, "c", "a"))
		ok, err = be.acquire(ctx, "c", "x", 2, shortTTL)
		require.NoError(t, err)
		require.True(t, ok)
		// A lease not released (its gateway died) expires.
		advance(shortTTL + shortTTL/4)
		ok, err = be.acquire(ctx, "c", "y", 2, time.Minute)
		require.NoError(t, err)
		require.True(t, ok, "x's lease expired")
	})
}

func TestBackendBudgets(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend, advance func(time.Duration)) {
		ctx := context.Background()
		var loads atomic.Int32
		base := func(context.Context) (int64, error) { loads.Add(1); return 40, nil }
		b := budgetKey{"spend", "ten_1", "2026-03"}
		ok, used, err := be.reserve(ctx, b, "r1", 50, 100, time.Minute, base)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, int64(90), used)
		ok, _, err = be.reserve(ctx, b, "r2", 20, 100, time.Minute, base)
		require.NoError(t, err)
		require.False(t, ok, "40 used + 50 reserved + 20 > 100")
		require.NoError(t, be.settleBudget(ctx, b, "r1", 30)) // used 70
		ok, used, err = be.reserve(ctx, b, "r2", 20, 100, time.Minute, base)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, int64(90), used)
		require.EqualValues(t, 1, loads.Load(), "the ledger is read once per budget")

		// An abandoned reservation expires and stops counting.
		ok, _, err = be.reserve(ctx, b, "r3", 10, 100, shortTTL, base)
		require.NoError(t, err)
		require.True(t, ok) // 100
		ok, _, err = be.reserve(ctx, b, "r4", 10, 100, time.Minute, base)
		require.NoError(t, err)
		require.False(t, ok)
		advance(shortTTL + shortTTL/4)
		ok, _, err = be.reserve(ctx, b, "r4", 10, 100, time.Minute, base)
		require.NoError(t, err)
		require.True(t, ok, "r3 expired")
		// Settling an expired reservation still bills its usage, once.
		require.NoError(t, be.settleBudget(ctx, b, "r3", 5)) // used 75, reserved r2 20 + r4 10
		ok, _, err = be.reserve(ctx, b, "r5", 1, 100, time.Minute, base)
		require.NoError(t, err)
		require.False(t, ok, "75 + 30 reserved > 100 - 1")

		// Another period is another budget; a failing ledger read is an error, not a grant.
		ok, _, err = be.reserve(ctx, budgetKey{"spend", "ten_1", "2026-04"}, "r6", 1, 100, time.Minute,
			func(context.Context) (int64, error) { return 0, errors.New("disk on fire") })
		require.ErrorContains(t, err, "disk on fire")
		require.False(t, ok)
		require.NotErrorIs(t, err, errBackend, "a ledger failure is not the backend's: it fails closed")
	})
}

func TestRedisUnreachable(t *testing.T) {
	rb, err := newRedisBackend("redis://127.0.0.1:1/0", "x:")
	require.NoError(t, err)
	defer rb.Close()
	ctx := context.Background()
	_, err = rb.admitRates(ctx, "b", 1, 1, 1, false)
	require.ErrorIs(t, err, errBackend)
	_, err = rb.acquire(ctx, "b", "r", 1, time.Minute)
	require.ErrorIs(t, err, errBackend)
	_, _, err = rb.reserve(ctx, budgetKey{"spend", "t", "p"}, "r", 1, 1, time.Minute, func(context.Context) (int64, error) { return 0, nil })
	require.ErrorIs(t, err, errBackend)
	require.ErrorIs(t, rb.settleBudget(ctx, budgetKey{"spend", "t", "p"}, "r", 1), errBackend)
}
