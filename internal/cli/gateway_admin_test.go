package cli

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// runCmd runs one of this file's commands (not yet registered on the root) with --data-dir dir.
func runCmd(t *testing.T, dir string, mk func(*globals) *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	g := &globals{stdout: &out, stderr: &out, dataDir: dir}
	if cfg := filepath.Join(dir, "strata.yaml"); fileExists(cfg) {
		g.configFile = cfg
	}
	cmd := mk(g)
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestBillPricesPolicyCommands(t *testing.T) {
	dir := t.TempDir()
	_, _, err := run(t, "tenants", "create", "acme", "--data-dir", dir)
	require.NoError(t, err)

	out, err := runCmd(t, dir, pricesCmd, "set", "m", "--input", "1000000", "--cached", "250000", "--output", "4000000", "--effective", "2026-01-01T00:00:00Z")
	require.NoError(t, err)
	require.Equal(t, "price of m from 2026-01-01T00:00:00Z: input 1000000, cached 250000, output 4000000 micro-USD per million tokens\n", out)
	_, err = runCmd(t, dir, pricesCmd, "set", "m", "--input", "-1")
	require.ErrorContains(t, err, "input price: must be between 0")
	out, err = runCmd(t, dir, pricesCmd, "list")
	require.NoError(t, err)
	require.Contains(t, out, "m      2026-01-01T00:00:00Z  1000000  250000")

	_, err = runCmd(t, dir, policyCmd, "tenant", "acme", "--tier", "gold")
	require.ErrorContains(t, err, `unknown tier "gold"`, "a tier must exist in the config")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "strata.yaml"), []byte("gateway:\n  tiers:\n    gold:\n      rpm: 100\n"), 0o600))
	out, err = runCmd(t, dir, policyCmd, "tenant", "acme", "--tier", "gold", "--rpm", "0", "--monthly-spend-micros", "5000000", "--models", "a,b")
	require.NoError(t, err)
	require.Equal(t, "tenant acme: tier \"gold\", overrides rpm=0 monthly_spend_micros=5000000 models=a,b\n", out)
	_, err = runCmd(t, dir, policyCmd, "tenant", "acme", "--max-tokens-default", "10", "--max-tokens-cap", "5")
	require.ErrorContains(t, err, "max_tokens_default: 10 is above max_tokens_cap 5")
	_, err = runCmd(t, dir, policyCmd, "key", "key_nope", "--rpm", "5")
	require.ErrorIs(t, err, store.ErrNotFound)

	// Two records in March 2026 (UTC, the default zone), one in April.
	st, err := store.Open(context.Background(), config.Store{Driver: "sqlite", DSN: filepath.Join(dir, "strata.db")})
	require.NoError(t, err)
	acme, err := st.TenantByName(context.Background(), "acme")
	require.NoError(t, err)
	require.Equal(t, "gold", acme.Tier)
	for i, at := range []time.Time{time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 30, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)} {
		_, err := st.InsertUsage(context.Background(), &store.UsageRecord{RequestID: string(rune('a' + i)), TenantID: acme.ID, KeyID: "k", Model: "m",
			PromptTokens: 1000, CachedTokens: 200, CompletionTokens: 100, Status: 200, Source: store.UsageEngine, CreatedAt: at})
		require.NoError(t, err)
	}
	require.NoError(t, st.Close())

	out, err = runCmd(t, dir, billCmd, "--period", "2026-03", "--csv")
	require.NoError(t, err)
	// 1600 fresh x 1 + 400 cached x 0.25 + 200 output x 4 = 2500 micro-USD.
	require.Equal(t, `tenant,model,from,until,requests,fresh_input_tokens,cached_input_tokens,output_tokens,input_micros_per_m,cached_micros_per_m,output_micros_per_m,cost_micros,cost_usd
acme,m,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,2,1600,400,200,1000000,250000,4000000,2500,0.002500
`, out)
	out, err = runCmd(t, dir, billCmd, "--tenant", "acme", "--since", "2026-03-01T00:00:00Z", "--until", "2026-05-01T00:00:00Z")
	require.NoError(t, err)
	require.Contains(t, out, "TOTAL")
	require.Contains(t, out, "0.003750")
	_, err = runCmd(t, dir, billCmd, "--period", "2026-3x")
	require.ErrorContains(t, err, "want YYYY-MM")
	_, err = runCmd(t, dir, billCmd, "--since", "2026-03-01T00:00:00Z")
	require.ErrorContains(t, err, "--since and --until together")
}

func TestAuditCommands(t *testing.T) {
	dir := t.TempDir()
	_, _, err := run(t, "tenants", "create", "acme", "--data-dir", dir)
	require.NoError(t, err)
	keyOut, _, err := run(t, "keys", "create", "--tenant", "acme", "--data-dir", dir)
	require.NoError(t, err)
	key := regexp.MustCompile(`key: (\S+)`).FindStringSubmatch(keyOut)[1]
	_, err = runCmd(t, dir, policyCmd, "tenant", "acme", "--rpm", "5")
	require.NoError(t, err)
	out, err := runCmd(t, dir, auditCmd, "verify")
	require.NoError(t, err)
	require.Regexp(t, `^audit log verified: 3 entries, head [0-9a-f]{64}\n$`, out)
	out, err = runCmd(t, dir, auditCmd, "list")
	require.NoError(t, err)
	require.Contains(t, out, "tenant.create")
	require.Contains(t, out, "key.create")
	require.Regexp(t, `tenant.policy +acme +\{"policy":\{"rpm":5\},"tier":""\}`, out)
	require.NotContains(t, out, key, "no key in the log, only its visible prefix")

	// Tampering with the database directly is detected.
	db, err := sql.Open("sqlite", filepath.Join(dir, "strata.db"))
	require.NoError(t, err)
	_, err = db.Exec(`UPDATE audit_log SET detail = '{"policy":{"rpm":5000}}' WHERE seq = 3`)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	_, err = runCmd(t, dir, auditCmd, "verify")
	require.ErrorIs(t, err, store.ErrAuditBroken)
	require.ErrorContains(t, err, "entry 3 was altered")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
