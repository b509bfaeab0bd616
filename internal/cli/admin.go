package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-inference/strata/internal/gateway"
	"github.com/strata-inference/strata/internal/store"
)

// withAdmin opens the configured store and key secret, runs fn, and closes the store.
func withAdmin(ctx context.Context, g *globals, fn func(*gateway.Admin) error) error {
	cfg, err := g.loadConfig()
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	secret, err := gateway.LoadOrCreateSecret(cfg.Gateway.KeySecretFile)
	if err != nil {
		return err
	}
	return fn(gateway.NewAdmin(st, secret).WithConfig(cfg.Gateway))
}

func keysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create, list and revoke tenant API keys"}
	var tenant, expiresIn, expiresAt string
	create := &cobra.Command{
		Use:   "create --tenant NAME [--expires-in 720h | --expires-at RFC3339]",
		Short: "Create an API key for a tenant, optionally expiring; the key is printed once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			expires, err := expiryFlags(expiresIn, expiresAt)
			if err != nil {
				return err
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				key, k, err := a.CreateKeyExpiring(cmd.Context(), tenant, expires)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "id:  %s\nkey: %s\n(the key is shown only this once)\n", k.ID, key)
				if !k.ExpiresAt.IsZero() {
					fmt.Fprintf(g.stdout, "expires: %s\n", k.ExpiresAt.UTC().Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant name (required)")
	create.Flags().StringVar(&expiresIn, "expires-in", "", "the key expires after this duration (e.g. 720h)")
	create.Flags().StringVar(&expiresAt, "expires-at", "", "the key expires at this time (RFC 3339)")
	_ = create.MarkFlagRequired("tenant")

	var listTenant string
	list := &cobra.Command{
		Use:   "list [--tenant NAME]",
		Short: "List API keys (never the keys themselves: id, visible prefix, state)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				keys, err := a.ListKeys(cmd.Context(), listTenant)
				if err != nil {
					return err
				}
				tenants, err := tenantNames(cmd.Context(), a)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tPREFIX\tTENANT\tCREATED\tLAST USED\tEXPIRES\tSTATE")
				for _, k := range keys {
					fmt.Fprintf(tw, "%s\t%s…\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, tenants[k.TenantID],
						k.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(k.LastUsedAt), timeOrDash(k.ExpiresAt), keyState(&k, time.Now()))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "only this tenant's keys")

	revoke := revokeCmd(g, "Revoke an API key at once", (*gateway.Admin).RevokeKey)

	var grace string
	rotate := &cobra.Command{
		Use:   "rotate ID [--grace 24h]",
		Short: "Replace a key by a new one (printed once); the old key keeps working for the grace period",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := time.ParseDuration(grace)
			if err != nil {
				return fmt.Errorf("--grace: %w", err)
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				key, next, old, err := a.RotateKey(cmd.Context(), args[0], d)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "id:  %s\nkey: %s\n(the key is shown only this once)\nold key %s valid until %s\n",
					next.ID, key, old.ID, old.RevokedAt.UTC().Format(time.RFC3339))
				return nil
			})
		},
	}
	rotate.Flags().StringVar(&grace, "grace", "0s", "how long the old key keeps working (at most 720h)")

	var at, in string
	expire := &cobra.Command{
		Use:   "expire ID (--at RFC3339 | --in 720h | --never)",
		Short: "Set or clear a key's expiry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			never, _ := cmd.Flags().GetBool("never")
			if never == (at != "" || in != "") {
				return fmt.Errorf("give exactly one of --at, --in, --never")
			}
			expires, err := expiryFlags(in, at)
			if err != nil {
				return err
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				k, err := a.SetKeyExpiry(cmd.Context(), args[0], expires)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "key %s expires %s\n", k.ID, orNever(k.ExpiresAt))
				return nil
			})
		},
	}
	expire.Flags().StringVar(&at, "at", "", "expiry time (RFC 3339)")
	expire.Flags().StringVar(&in, "in", "", "expiry as a duration from now")
	expire.Flags().Bool("never", false, "the key never expires")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one API key (never the key itself)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				k, err := a.Key(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "id:          %s\nprefix:      %s…\ntenant:      %s\ncreated:     %s\nlast used:   %s\nexpires:     %s\nstate:       %s\n",
					k.ID, k.Prefix, k.TenantID, k.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(k.LastUsedAt), orNever(k.ExpiresAt), keyState(k, time.Now()))
				if k.ReplacedBy != "" {
					fmt.Fprintf(g.stdout, "replaced by: %s\n", k.ReplacedBy)
				}
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke, rotate, expire, show)
	return cmd
}

// expiryFlags turns --expires-in / --expires-at into a time (zero: none given).
func expiryFlags(in, at string) (time.Time, error) {
	switch {
	case in != "" && at != "":
		return time.Time{}, fmt.Errorf("give an expiry as a duration or a time, not both")
	case in != "":
		d, err := time.ParseDuration(in)
		if err != nil || d <= 0 {
			return time.Time{}, fmt.Errorf("expiry duration %q: want a positive duration such as 720h", in)
		}
		return time.Now().Add(d), nil
	case at != "":
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return time.Time{}, fmt.Errorf("expiry time: %w", err)
		}
		return t, nil
	}
	return time.Time{}, nil
}

// keyState is a key's state for listings: active, "revoked <time>", "expired <time>", or "rotated,
// valid until <time>".
func keyState(k *store.APIKey, now time.Time) string {
	switch {
	case k.ReplacedBy != "" && !k.Revoked(now):
		return "rotated, valid until " + k.RevokedAt.UTC().Format(time.RFC3339)
	case k.Revoked(now):
		return "revoked " + k.RevokedAt.UTC().Format(time.RFC3339)
	case k.Expired(now):
		return "expired " + k.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return "active"
}

func orNever(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func tenantsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Create and list tenants"}
	var rpm, tpm int
	var models, externalID, tier string
	var iolog bool
	create := &cobra.Command{
		Use:   "create NAME [--rpm N --tpm N --models a,b --external-id ID --tier T --iolog]",
		Short: "Create a tenant with its limits and model allowlist",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				t, err := a.CreateTenantSpec(cmd.Context(), gateway.TenantSpec{Name: args[0], RPM: rpm, TPM: tpm, Models: splitList(models),
					ExternalID: externalID, Tier: tier, IOLog: iolog})
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "created tenant %s (rpm %s, tpm %s, models %s)\n", t.Name,
					limitText(t.RPM), limitText(t.TPM), modelsText(t.Models))
				return nil
			})
		},
	}
	create.Flags().IntVar(&rpm, "rpm", 0, "requests per minute (0 = unlimited)")
	create.Flags().IntVar(&tpm, "tpm", 0, "tokens per minute, input + output (0 = unlimited)")
	create.Flags().StringVar(&models, "models", "", "comma-separated model allowlist (empty = all models)")
	create.Flags().StringVar(&externalID, "external-id", "", "the tenant's id in your own customer system (unique)")
	create.Flags().StringVar(&tier, "tier", "", "tier name (default: the configured default tier)")
	create.Flags().BoolVar(&iolog, "iolog", false, "opt the tenant in to the I/O log")

	list := &cobra.Command{
		Use:   "list",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				ts, err := a.ListTenants(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tRPM\tTPM\tMODELS\tTIER\tEXTERNAL ID\tIOLOG\tCREATED")
				for _, t := range ts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, limitText(t.RPM), limitText(t.TPM),
						modelsText(t.Models), dashIfEmpty(t.Tier), dashIfEmpty(t.ExternalID), onOff(t.IOLog), t.CreatedAt.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(create, list, tenantShowCmd(g), tenantUpdateCmd(g), tenantIOLogCmd(g))
	return cmd
}

func tenantShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show one tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				t, err := a.Tenant(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				printTenant(g, t)
				return nil
			})
		},
	}
}

func printTenant(g *globals, t *store.Tenant) {
	fmt.Fprintf(g.stdout, "name:        %s\nid:          %s\nexternal id: %s\ntier:        %s\nrpm:         %s\ntpm:         %s\nmodels:      %s\niolog:       %s\ncreated:     %s\n",
		t.Name, t.ID, dashIfEmpty(t.ExternalID), dashIfEmpty(t.Tier), limitText(t.RPM), limitText(t.TPM), modelsText(t.Models), onOff(t.IOLog),
		t.CreatedAt.UTC().Format(time.RFC3339))
}

// tenantUpdateCmd is `strata tenants update NAME`: the admin API's PATCH /admin/v1/tenants/{name}.
func tenantUpdateCmd(g *globals) *cobra.Command {
	var externalID, models, iolog string
	var rpm, tpm int
	cmd := &cobra.Command{
		Use:   "update NAME [--external-id ID] [--rpm N] [--tpm N] [--models a,b] [--iolog on|off]",
		Short: "Change a tenant's external id, limits, model allowlist or I/O log opt-in (other fields unchanged)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var u store.TenantUpdate
			f := cmd.Flags()
			if f.Changed("external-id") {
				u.ExternalID = &externalID
			}
			if f.Changed("rpm") {
				u.RPM = &rpm
			}
			if f.Changed("tpm") {
				u.TPM = &tpm
			}
			if f.Changed("models") {
				m := splitList(models)
				u.Models = &m
			}
			if f.Changed("iolog") {
				on, err := parseOnOff(iolog)
				if err != nil {
					return fmt.Errorf("--iolog: %w", err)
				}
				u.IOLog = &on
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				t, err := a.UpdateTenant(cmd.Context(), args[0], u)
				if err != nil {
					return err
				}
				printTenant(g, t)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&externalID, "external-id", "", "the tenant's id in your own customer system (\"\" clears it)")
	cmd.Flags().IntVar(&rpm, "rpm", 0, "requests per minute (0 = unlimited)")
	cmd.Flags().IntVar(&tpm, "tpm", 0, "tokens per minute (0 = unlimited)")
	cmd.Flags().StringVar(&models, "models", "", "comma-separated model allowlist (\"\" = all models)")
	cmd.Flags().StringVar(&iolog, "iolog", "", "I/O log opt-in: on or off")
	return cmd
}

// tenantIOLogCmd is `strata tenants iolog NAME [on|off]`: with on or off, opt the tenant in to or
// out of the I/O log; without, list its newest entries (redacted bodies).
func tenantIOLogCmd(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "iolog NAME [on|off]",
		Short: "Opt a tenant in to or out of the I/O log, or list its newest entries",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				if len(args) == 2 {
					on, err := parseOnOff(args[1])
					if err != nil {
						return err
					}
					if _, err := a.UpdateTenant(cmd.Context(), args[0], store.TenantUpdate{IOLog: &on}); err != nil {
						return err
					}
					fmt.Fprintf(g.stdout, "tenant %s: I/O log %s\n", args[0], onOff(on))
					return nil
				}
				if _, err := a.Tenant(cmd.Context(), args[0]); err != nil {
					return err
				}
				es, err := a.IOLog(cmd.Context(), args[0], limit)
				if err != nil {
					return err
				}
				for _, e := range es {
					fmt.Fprintf(g.stdout, "%s  %s  %s  %s\n  request:  %s\n  response: %s\n", e.CreatedAt.UTC().Format(time.RFC3339), e.RequestID, e.KeyID,
						e.Model, e.Request, e.Response)
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "newest entries to show")
	return cmd
}

func parseOnOff(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("%q: want on or off", s)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func usageCmd(g *globals) *cobra.Command {
	var tenant string
	var limit int
	var asCSV bool
	cmd := &cobra.Command{
		Use:   "usage [--tenant NAME] [--limit N] [--csv]",
		Short: "Show usage records (one per request) and their totals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				recs, err := a.Usage(cmd.Context(), tenant, limit)
				if err != nil {
					return err
				}
				if asCSV {
					return gateway.WriteUsageCSV(g.stdout, recs)
				}
				tenants, err := tenantNames(cmd.Context(), a)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tREQUEST\tTENANT\tMODEL\tREPLICA\tPROMPT\tCACHED\tCOMPLETION\tTTFT\tDURATION\tSTATUS")
				var p, c, o int64
				for _, u := range recs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\n", u.CreatedAt.UTC().Format(time.RFC3339),
						u.RequestID, tenants[u.TenantID], u.Model, u.Endpoint, u.PromptTokens, u.CachedTokens,
						u.CompletionTokens, u.TTFT.Round(time.Millisecond), u.Duration.Round(time.Millisecond), u.Status)
					p, c, o = p+u.PromptTokens, c+u.CachedTokens, o+u.CompletionTokens
				}
				fmt.Fprintf(tw, "TOTAL\t%d requests\t\t\t\t%d\t%d\t%d\t\t\t\n", len(recs), p, c, o)
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's usage")
	cmd.Flags().IntVar(&limit, "limit", 100, "most recent records to show")
	cmd.Flags().BoolVar(&asCSV, "csv", false, "write CSV (RFC 4180) instead of a table")
	return cmd
}

// revokeCmd is `revoke ID` for keys and admin tokens: revoke runs with the command's context.
func revokeCmd(g *globals, short string, revoke func(*gateway.Admin, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				if err := revoke(a, cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "revoked %s\n", args[0])
				return nil
			})
		},
	}
}

func tenantNames(ctx context.Context, a *gateway.Admin) (map[string]string, error) {
	ts, err := a.ListTenants(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[t.ID] = t.Name
	}
	return m, nil
}

func limitText(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

func modelsText(m []string) string {
	if len(m) == 0 {
		return "all"
	}
	return strings.Join(m, ",")
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
