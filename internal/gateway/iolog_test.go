package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	testclock "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

func newTestIOLog(t *testing.T, st *store.Store, clk *testclock.FakeClock, cfg config.IOLog) *ioLog {
	t.Helper()
	if cfg.RetentionDays == 0 {
		cfg = config.Default().Gateway.IOLog
	}
	l, err := newIOLog(st, cfg, clk, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return l
}

// TestIOLogRedaction: e-mail addresses and card numbers that pass the Luhn check are redacted by
// default; digit runs that fail it are kept; configured patterns add to the defaults, or replace
// them with no_default_redaction; bodies are cut to max_body_bytes.
func TestIOLogRedaction(t *testing.T) {
	clk := testclock.NewFakeClock(t0)
	st := openTestStore(t)
	def := newTestIOLog(t, st, clk, config.IOLog{})
	for _, tc := range []struct{ in, want string }{
		{`{"content":"mail me: jane.doe+x@example.co.uk now"}`, `{"content":"mail me: [REDACTED] now"}`},
		{`card 4111 1111 1111 1111 exp`, `card [REDACTED] exp`},
		{`card 4111-1111-1111-1111`, `card [REDACTED]`},
		{`card 4111111111111111`, `card [REDACTED]`},
		{`order 4111111111111112`, `order 4111111111111112`}, // fails Luhn: not a card
		{`tiny 12345`, `tiny 12345`},
		{`no secrets here`, `no secrets here`},
	} {
		require.Equal(t, tc.want, string(def.scrub([]byte(tc.in))), tc.in)
	}

	custom := newTestIOLog(t, st, clk, config.IOLog{RetentionDays: 1, PurgeInterval: config.Duration(time.Hour), MaxBodyBytes: 32,
		Redact: []string{`sk-[A-Za-z0-9]+`}})
	require.Equal(t, `key [REDACTED] of [REDACTED]`, string(custom.scrub([]byte(`key sk-abc123 of a@b.io`))))
	require.Len(t, custom.scrub([]byte(strings.Repeat("x", 100))), 32)

	only := newTestIOLog(t, st, clk, config.IOLog{RetentionDays: 1, PurgeInterval: config.Duration(time.Hour), MaxBodyBytes: 1 << 10,
		Redact: []string{`secret`}, NoDefaultRedaction: true})
	require.Equal(t, `[REDACTED] a@b.io`, string(only.scrub([]byte(`secret a@b.io`))))

	_, err := newIOLog(st, config.IOLog{Redact: []string{`(`}}, clk, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	require.Error(t, err)
}

// TestIOLogOptInAndPurge: only opted-in tenants are logged (the set re-read after its TTL), the
// purge loop deletes entries past the retention on the injected clock, and stops with its context.
func TestIOLogOptInAndPurge(t *testing.T) {
	ctx := context.Background()
	clk := testclock.NewFakeClock(t0)
	st := openTestStore(t)
	a := NewAdmin(st, testSecret)
	_, err := a.CreateTenantSpec(ctx, TenantSpec{Name: "in", IOLog: true})
	require.NoError(t, err)
	out, err := a.CreateTenant(ctx, "out", 0, 0, nil)
	require.NoError(t, err)
	in, err := a.Tenant(ctx, "in")
	require.NoError(t, err)
	l := newTestIOLog(t, st, clk, config.IOLog{})

	var nilLog *ioLog
	require.False(t, nilLog.enabled(in.ID))
	nilLog.record(ctx, ioRecord{TenantID: in.ID}) // no panic

	require.True(t, l.enabled(in.ID))
	require.False(t, l.enabled(out.ID))
	l.record(ctx, ioRecord{TenantID: in.ID, KeyID: "k", RequestID: "r1", Model: "m", Request: []byte(`{"a":"x@y.com"}`), Response: []byte("ok"), At: clk.Now()})
	l.record(ctx, ioRecord{TenantID: out.ID, RequestID: "r2", Request: []byte("{}"), At: clk.Now()})
	es, err := st.ListIOLog(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, `{"a":"[REDACTED]"}`, string(es[0].Request))
	require.Equal(t, 1.0, testutil.ToFloat64(l.written))

	on := true
	_, err = st.UpdateTenant(ctx, out.ID, store.TenantUpdate{IOLog: &on})
	require.NoError(t, err)
	require.False(t, l.enabled(out.ID), "cached until the TTL")
	clk.Step(ioLogTTL)
	require.True(t, l.enabled(out.ID), "re-read after the TTL")

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { l.runPurge(runCtx); close(done) }()
	require.Eventually(t, clk.HasWaiters, time.Second, time.Millisecond) // first purge ran (nothing old), timer re-armed
	clk.Step(30*24*time.Hour - ioLogTTL + time.Millisecond)              // just past the retention of the entry
	require.Eventually(t, func() bool {
		es, err := st.ListIOLog(ctx, "", 0)
		return err == nil && len(es) == 0
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(l.purged))
	cancel()
	<-done
}

// TestIOLogEndToEnd: a request of an opted-in tenant lands in io_log, redacted, with the response
// as sent; nothing of the body reaches the gateway's slog output; a tenant that did not opt in
// leaves no entry.
func TestIOLogEndToEnd(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	require.Equal(t, http.StatusOK, h.do(http.MethodPost, openai.PathChatCompletions, simpleChat).Code)
	es, err := h.st.ListIOLog(ctx, "", 0)
	require.NoError(t, err)
	require.Empty(t, es, "not opted in")

	on := true
	_, err = h.admin.UpdateTenant(ctx, "acme", store.TenantUpdate{IOLog: &on})
	require.NoError(t, err)
	h.clk.Step(ioLogTTL)
	body := `{"model":"m1","messages":[{"role":"user","content":"I am bob@example.com, card 4111 1111 1111 1111"}]}`
	w := h.do(http.MethodPost, openai.PathChatCompletions, body, openai.HeaderRequestID, "req-io")
	require.Equal(t, http.StatusOK, w.Code)
	es, err = h.st.ListIOLog(ctx, h.tenant.ID, 0)
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, "req-io", es[0].RequestID)
	require.Equal(t, h.keyRec.ID, es[0].KeyID)
	require.Contains(t, string(es[0].Request), "I am [REDACTED], card [REDACTED]")
	require.NotContains(t, string(es[0].Request), "bob@example.com")
	require.NotEmpty(t, es[0].Response)
	require.NotContains(t, h.logs.String(), "bob@example.com", "bodies never go to the logs")
}

// FuzzIOLogScrub: redaction of any body never panics, never grows a body beyond the cut plus the
// replacement text, and leaves no Luhn-valid 16-digit card number behind.
func FuzzIOLogScrub(f *testing.F) {
	for _, s := range []string{"a@b.co", "4111 1111 1111 1111", "4111-1111-1111-1111x", "", "\xff\xfe@\x00.com", strings.Repeat("1", 40)} {
		f.Add([]byte(s))
	}
	l := &ioLog{cfg: config.IOLog{MaxBodyBytes: 1 << 10}, redact: []*regexp.Regexp{emailPattern, cardPattern}}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := l.scrub(b)
		require.LessOrEqual(t, len(out), len(redacted)*(len(b)+1)+len(b))
		require.False(t, emailPattern.Match(out), "an address survived: %q", out)
	})
}
