package cli

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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

// TestIdentityAndTenantCommands: the CLI side of the admin API's tenant plane: external ids
// (unique), tenant updates and the I/O log toggle, key expiry, rotation with a grace period,
// policy show with fairness, tier prices, GPU costs, bill with margin, re-rating and history,
// usage as CSV.
func TestIdentityAndTenantCommands(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "strata.yaml"), []byte("gateway:\n  tiers:\n    gold:\n      rpm: 100\n"), 0o600))
	out, err := runCmd(t, dir, tenantsCmd, "create", "acme", "--external-id", "cus_1", "--tier", "gold")
	require.NoError(t, err, out)
	_, err = runCmd(t, dir, tenantsCmd, "create", "beta", "--external-id", "cus_1")
	require.ErrorIs(t, err, store.ErrExists, "external ids are unique")
	out, err = runCmd(t, dir, tenantsCmd, "update", "acme", "--external-id", "cus_2", "--rpm", "7", "--iolog", "on")
	require.NoError(t, err)
	require.Contains(t, out, "external id: cus_2")
	require.Contains(t, out, "rpm:         7")
	require.Contains(t, out, "iolog:       on")
	_, err = runCmd(t, dir, tenantsCmd, "update", "acme", "--iolog", "maybe")
	require.ErrorContains(t, err, "want on or off")
	out, err = runCmd(t, dir, tenantsCmd, "iolog", "acme", "off")
	require.NoError(t, err)
	require.Equal(t, "tenant acme: I/O log off\n", out)
	out, err = runCmd(t, dir, tenantsCmd, "iolog", "acme")
	require.NoError(t, err)
	require.Empty(t, out)
	out, err = runCmd(t, dir, tenantsCmd, "list")
	require.NoError(t, err)
	require.Regexp(t, `acme\s+7\s+unlimited\s+all\s+gold\s+cus_2\s+off`, out)

	out, err = runCmd(t, dir, keysCmd, "create", "--tenant", "acme", "--expires-in", "720h")
	require.NoError(t, err)
	require.Contains(t, out, "expires: ")
	id := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(out)[1]
	_, err = runCmd(t, dir, keysCmd, "create", "--tenant", "acme", "--expires-in", "-1h")
	require.ErrorContains(t, err, "want a positive duration")
	out, err = runCmd(t, dir, keysCmd, "expire", id, "--at", "2031-01-01T00:00:00Z")
	require.NoError(t, err)
	require.Equal(t, "key "+id+" expires 2031-01-01T00:00:00Z\n", out)
	_, err = runCmd(t, dir, keysCmd, "expire", id)
	require.ErrorContains(t, err, "exactly one of")
	out, err = runCmd(t, dir, keysCmd, "rotate", id, "--grace", "24h")
	require.NoError(t, err)
	require.Regexp(t, `(?s)key: sk-strata-\S+.*old key `+id+` valid until `, out)
	newID := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(out)[1]
	out, err = runCmd(t, dir, keysCmd, "list", "--tenant", "acme")
	require.NoError(t, err)
	require.Contains(t, out, "rotated, valid until")
	require.Contains(t, out, "2031-01-01T00:00:00Z", "the new key inherits the expiry")
	out, err = runCmd(t, dir, keysCmd, "show", id)
	require.NoError(t, err)
	require.Contains(t, out, "replaced by: "+newID)
	_, err = runCmd(t, dir, keysCmd, "rotate", id)
	require.ErrorIs(t, err, store.ErrExists)

	_, err = runCmd(t, dir, policyCmd, "key", newID, "--fairness", "key", "--rpm", "3")
	require.NoError(t, err)
	_, err = runCmd(t, dir, policyCmd, "key", newID, "--fairness", "session")
	require.ErrorContains(t, err, "fairness")
	out, err = runCmd(t, dir, policyCmd, "show", "--key", newID)
	require.NoError(t, err)
	require.Contains(t, out, "overrides: rpm=3 fairness=key")
	require.Contains(t, out, "effective: rpm=3", "the key's rpm over the tenant's 7 and the tier's 100")
	out, err = runCmd(t, dir, policyCmd, "show", "acme")
	require.NoError(t, err)
	require.Contains(t, out, "effective: rpm=7")

	period := time.Now().UTC().Format("2006-01")
	start, _ := time.Parse("2006-01", period)
	_, err = runCmd(t, dir, pricesCmd, "set", "m", "--input", "1000000", "--cached", "0", "--output", "2000000", "--effective", start.Add(-time.Hour).Format(time.RFC3339))
	require.NoError(t, err)
	out, err = runCmd(t, dir, pricesCmd, "set", "m", "--tier", "gold", "--input", "500000", "--cached", "0", "--output", "1000000",
		"--effective", start.Add(-time.Hour).Format(time.RFC3339))
	require.NoError(t, err)
	require.Contains(t, out, "for tier gold")
	out, err = runCmd(t, dir, pricesCmd, "gpu", "set", "H100", "--per-hour-micros", "3600000", "--effective", start.Add(-time.Hour).Format(time.RFC3339))
	require.NoError(t, err)
	require.Contains(t, out, "3600000 micro-USD per GPU-hour")
	out, err = runCmd(t, dir, pricesCmd, "gpu", "list")
	require.NoError(t, err)
	require.Contains(t, out, "H100")

	cfg, err := (&globals{dataDir: dir, configFile: filepath.Join(dir, "strata.yaml")}).loadConfig()
	require.NoError(t, err)
	st, err := store.Open(context.Background(), cfg.Store)
	require.NoError(t, err)
	ten, err := st.TenantByName(context.Background(), "acme")
	require.NoError(t, err)
	_, err = st.InsertUsage(context.Background(), &store.UsageRecord{RequestID: "r1", TenantID: ten.ID, KeyID: newID, Model: "m", GPU: "H100",
		PromptTokens: 1_000_000, CompletionTokens: 1_000_000, Duration: 10 * time.Second, Status: 200, Source: store.UsageEngine, CreatedAt: start.Add(time.Minute)})
	require.NoError(t, err)
	require.NoError(t, st.Close())

	out, err = runCmd(t, dir, billCmd, "--tenant", "acme", "--period", period)
	require.NoError(t, err)
	require.Contains(t, out, "cost 1.500000 USD; GPU cost 0.010000 USD; margin 1.490000 USD", "the gold tier's prices")
	out, err = runCmd(t, dir, billCmd, "rerate", "--tenant", "acme", "--period", period)
	require.NoError(t, err)
	require.Contains(t, out, "rated: version 1, cost 1.500000 USD")
	out, err = runCmd(t, dir, billCmd, "rerate", "--tenant", "acme", "--period", period)
	require.NoError(t, err)
	require.Contains(t, out, "re-rated: version 2, cost 1.500000 USD (was 1.500000, change 0.000000)")
	out, err = runCmd(t, dir, billCmd, "history", "--tenant", "acme")
	require.NoError(t, err)
	require.Regexp(t, `acme\s+`+period+`\s+2\s`, out)
	out, err = runCmd(t, dir, usageCmd, "--csv")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out, "request_id,tenant_id,"), out)
}
