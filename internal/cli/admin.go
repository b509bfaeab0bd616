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
	return fn(gateway.NewAdmin(st, secret))
}

func keysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create, list and revoke tenant API keys"}
	var tenant string
	create := &cobra.Command{
		Use:   "create --tenant NAME",
		Short: "Create an API key for a tenant; the key is printed once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				key, k, err := a.CreateKey(cmd.Context(), tenant, "")
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "id:  %s\nkey: %s\n(the key is shown only this once)\n", k.ID, key)
				return nil
			})
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant name (required)")
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
				fmt.Fprintln(tw, "ID\tPREFIX\tTENANT\tCREATED\tLAST USED\tSTATE")
				for _, k := range keys {
					state := "active"
					if !k.RevokedAt.IsZero() {
						state = "revoked " + k.RevokedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s…\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, tenants[k.TenantID],
						k.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(k.LastUsedAt), state)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "only this tenant's keys")

	revoke := revokeCmd(g, "Revoke an API key at once", (*gateway.Admin).RevokeKey)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func tenantsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Create and list tenants"}
	var rpm, tpm int
	var models string
	create := &cobra.Command{
		Use:   "create NAME [--rpm N --tpm N --models a,b]",
		Short: "Create a tenant with its limits and model allowlist",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				t, err := a.CreateTenant(cmd.Context(), args[0], rpm, tpm, splitList(models))
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
				fmt.Fprintln(tw, "NAME\tRPM\tTPM\tMODELS\tCREATED")
				for _, t := range ts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, limitText(t.RPM), limitText(t.TPM),
						modelsText(t.Models), t.CreatedAt.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func usageCmd(g *globals) *cobra.Command {
	var tenant string
	var limit int
	cmd := &cobra.Command{
		Use:   "usage [--tenant NAME]",
		Short: "Show usage records (one per request) and their totals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				recs, err := a.Usage(cmd.Context(), tenant, limit)
				if err != nil {
					return err
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
