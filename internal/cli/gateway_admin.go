package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/gateway"
)

// billCmd is `strata bill`: usage rated with the price book, per tenant, model and stretch of
// constant price, for a calendar month in gateway.billing_time_zone (or --since/--until), as a
// table or as CSV.
func billCmd(g *globals) *cobra.Command {
	var tenant, period, since, until string
	var asCSV bool
	cmd := &cobra.Command{
		Use:   "bill [--tenant NAME] [--period YYYY-MM | --since RFC3339 --until RFC3339] [--csv]",
		Short: "Rate usage with the price book: tokens by class and cost per tenant and period",
		Long: "Rates the usage ledger with the price book (strata prices) as it stands now: a price correction\n" +
			"re-rates the period. Months are calendar months in gateway.billing_time_zone. Costs are integer\n" +
			"micro-USD, rounded half up once per line.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			loc, err := cfg.Gateway.Location()
			if err != nil {
				return err
			}
			from, to, err := billPeriod(period, since, until, loc)
			if err != nil {
				return err
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				lines, err := a.Bill(cmd.Context(), tenant, from, to)
				if err != nil {
					return err
				}
				if asCSV {
					return gateway.WriteBillCSV(g.stdout, lines)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TENANT\tMODEL\tFROM\tUNTIL\tREQUESTS\tFRESH IN\tCACHED IN\tOUTPUT\tCOST USD")
				var total int64
				for _, l := range lines {
					cost := gateway.FormatMicros(l.CostMicros)
					if l.Unpriced {
						cost += " (unpriced)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", l.Tenant, l.Model, l.From.Format(time.RFC3339),
						l.Until.Format(time.RFC3339), l.Requests, l.FreshTokens, l.CachedTokens, l.CompletionTokens, cost)
					total += l.CostMicros
				}
				fmt.Fprintf(tw, "TOTAL\t\t\t\t\t\t\t\t%s\n", gateway.FormatMicros(total))
				if err := tw.Flush(); err != nil {
					return err
				}
				if tenant == "" {
					return nil
				}
				p := period
				if p == "" && since == "" {
					p, _, _ = gateway.Month(from, loc)
				}
				inv, err := a.Invoice(cmd.Context(), tenant, p, from, to)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "tokens: %d fresh input, %d cached input, %d output; cost %s USD; GPU cost %s USD; margin %s USD\n",
					inv.FreshTokens, inv.CachedTokens, inv.OutputTokens, gateway.FormatMicros(inv.CostMicros),
					gateway.FormatMicros(inv.GPUCostMicros), gateway.FormatMicros(inv.MarginMicros))
				return nil
			})
		},
	}
	cmd.AddCommand(billRerateCmd(g), billHistoryCmd(g))
	f := cmd.Flags()
	f.StringVar(&tenant, "tenant", "", "only this tenant (default: every tenant)")
	f.StringVar(&period, "period", "", "calendar month YYYY-MM in the billing time zone (default: the current month)")
	f.StringVar(&since, "since", "", "start of a custom period (RFC 3339, inclusive)")
	f.StringVar(&until, "until", "", "end of a custom period (RFC 3339, exclusive)")
	f.BoolVar(&asCSV, "csv", false, "write CSV (RFC 4180) instead of a table")
	return cmd
}

// billPeriod resolves the period flags of billCmd.
func billPeriod(period, since, until string, loc *time.Location) (time.Time, time.Time, error) {
	switch {
	case since != "" || until != "":
		if period != "" || since == "" || until == "" {
			return time.Time{}, time.Time{}, fmt.Errorf("use --since and --until together, without --period")
		}
		s, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--since: %w", err)
		}
		u, err := time.Parse(time.RFC3339, until)
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--until: %w", err)
		}
		return s.In(loc), u.In(loc), nil
	case period != "":
		return gateway.ParseMonth(period, loc)
	default:
		_, s, u := gateway.Month(time.Now(), loc)
		return s, u, nil
	}
}

// pricesCmd is `strata prices set|list`: the price book.
func pricesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "prices", Short: "Set and list model prices (micro-USD per million tokens, with effective dates)"}
	var in, cached, out int64
	var effective, tier string
	set := &cobra.Command{
		Use:   "set MODEL --input N --cached N --output N [--effective RFC3339] [--tier T]",
		Short: "Add a price book entry, general or for one tier (an entry of the same model, tier and instant is replaced)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			at := time.Now()
			if effective != "" {
				var err error
				if at, err = time.Parse(time.RFC3339, effective); err != nil {
					return fmt.Errorf("--effective: %w", err)
				}
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				if tier != "" {
					p, err := a.SetTierPrice(cmd.Context(), tier, args[0], at, in, cached, out)
					if err != nil {
						return err
					}
					fmt.Fprintf(g.stdout, "price of %s for tier %s from %s: input %d, cached %d, output %d micro-USD per million tokens\n",
						p.Model, p.Tier, p.EffectiveAt.Format(time.RFC3339), p.InputMicros, p.CachedMicros, p.OutputMicros)
					return nil
				}
				p, err := a.SetPrice(cmd.Context(), args[0], at, in, cached, out)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "price of %s from %s: input %d, cached %d, output %d micro-USD per million tokens\n",
					p.Model, p.EffectiveAt.Format(time.RFC3339), p.InputMicros, p.CachedMicros, p.OutputMicros)
				return nil
			})
		},
	}
	set.Flags().Int64Var(&in, "input", 0, "fresh input tokens, micro-USD per million (1000000 = $1/M)")
	set.Flags().Int64Var(&cached, "cached", 0, "cached input tokens (prefix cache hits), micro-USD per million")
	set.Flags().Int64Var(&out, "output", 0, "output tokens, micro-USD per million")
	set.Flags().StringVar(&effective, "effective", "", "when the price starts to apply (default: now)")
	set.Flags().StringVar(&tier, "tier", "", "override the price for this tier's tenants only (default: the general price book)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the price book",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				ps, err := a.Prices(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "MODEL\tEFFECTIVE\tINPUT/M\tCACHED/M\tOUTPUT/M (micro-USD)")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", p.Model, p.EffectiveAt.Format(time.RFC3339), p.InputMicros, p.CachedMicros, p.OutputMicros)
				}
				tps, err := a.TierPrices(cmd.Context())
				if err != nil {
					return err
				}
				for _, p := range tps {
					fmt.Fprintf(tw, "%s [tier %s]\t%s\t%d\t%d\t%d\n", p.Model, p.Tier, p.EffectiveAt.Format(time.RFC3339), p.InputMicros, p.CachedMicros, p.OutputMicros)
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(set, list, gpuCostsCmd(g))
	return cmd
}

// policyCmd is `strata policy tenant|key`: tier assignment and policy overrides.
func policyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Set a tenant's tier and policy overrides, or a key's overrides"}
	var tier string
	tenantSet := &cobra.Command{
		Use:   "tenant NAME [--tier T] [limits...]",
		Short: "Assign a tenant to a tier and replace its overrides with the limits given (others inherit)",
		Args:  cobra.ExactArgs(1),
	}
	tp := policyFlags(tenantSet)
	tenantSet.Flags().StringVar(&tier, "tier", "", "tier name (default: the configured default tier)")
	tenantSet.RunE = func(cmd *cobra.Command, args []string) error {
		p, err := tp(cmd)
		if err != nil {
			return err
		}
		cfg, err := g.loadConfig()
		if err != nil {
			return err
		}
		if _, ok := cfg.Gateway.Tiers[tier]; tier != "" && !ok {
			// A tier the serving gateway does not know would silently give the tenant no tier limits.
			return fmt.Errorf("unknown tier %q: define it under gateway.tiers in the config", tier)
		}
		return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
			if err := a.SetTenantPolicy(cmd.Context(), args[0], tier, p); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "tenant %s: tier %q, overrides %s\n", args[0], tier, policyText(p))
			return nil
		})
	}
	keySet := &cobra.Command{
		Use:   "key ID [limits...]",
		Short: "Replace a key's overrides with the limits given (others inherit from its tenant)",
		Args:  cobra.ExactArgs(1),
	}
	kp := policyFlags(keySet)
	keySet.RunE = func(cmd *cobra.Command, args []string) error {
		p, err := kp(cmd)
		if err != nil {
			return err
		}
		return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
			if err := a.SetKeyPolicy(cmd.Context(), args[0], p); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "key %s: overrides %s\n", args[0], policyText(p))
			return nil
		})
	}
	cmd.AddCommand(tenantSet, keySet, policyShowCmd(g))
	return cmd
}

// policyFlags adds the config.Policy flags to cmd; the returned function builds the policy from
// the flags that were given (the others stay nil: inherited).
func policyFlags(cmd *cobra.Command) func(*cobra.Command) (config.Policy, error) {
	f := cmd.Flags()
	ints := map[string]*int64{}
	for _, n := range []struct{ name, help string }{
		{"rpm", "requests per minute (0 = unlimited)"},
		{"tpm", "tokens per minute, prompt + completion (0 = unlimited)"},
		{"max-concurrent", "requests in flight at once (0 = unlimited)"},
		{"monthly-tokens", "token quota per calendar month (0 = unlimited)"},
		{"monthly-spend-micros", "spend cap per calendar month in micro-USD (0 = unlimited)"},
		{"max-tokens-default", "max_tokens sent down when a request sets none (0 = none)"},
		{"max-tokens-cap", "largest output limit a request may ask for (0 = none)"},
	} {
		ints[n.name] = f.Int64(n.name, 0, n.help)
	}
	objective := f.String("objective", "", "inference objective name sent down as x-gateway-inference-objective")
	fairness := f.String("fairness", "", "fairness flow: tenant (default) or key")
	models := f.StringSlice("models", nil, "model allowlist (\"*\" = every model)")
	return func(cmd *cobra.Command) (config.Policy, error) {
		var p config.Policy
		set := func(name string) *int64 {
			if !cmd.Flags().Changed(name) {
				return nil
			}
			v := *ints[name]
			return &v
		}
		p.RPM, p.TPM, p.MaxConcurrent = set("rpm"), set("tpm"), set("max-concurrent")
		p.MonthlyTokens, p.MonthlySpendMicros = set("monthly-tokens"), set("monthly-spend-micros")
		p.MaxTokensDefault, p.MaxTokensCap = set("max-tokens-default"), set("max-tokens-cap")
		if cmd.Flags().Changed("objective") {
			p.Objective = objective
		}
		if cmd.Flags().Changed("fairness") {
			p.Fairness = fairness
		}
		if cmd.Flags().Changed("models") {
			p.Models = *models
		}
		return p, p.Validate()
	}
}

func policyText(p config.Policy) string {
	var parts []string
	add := func(name string, v *int64) {
		if v != nil {
			parts = append(parts, fmt.Sprintf("%s=%d", name, *v))
		}
	}
	add("rpm", p.RPM)
	add("tpm", p.TPM)
	add("max_concurrent", p.MaxConcurrent)
	add("monthly_tokens", p.MonthlyTokens)
	add("monthly_spend_micros", p.MonthlySpendMicros)
	add("max_tokens_default", p.MaxTokensDefault)
	add("max_tokens_cap", p.MaxTokensCap)
	if p.Objective != nil {
		parts = append(parts, "objective="+*p.Objective)
	}
	if p.Fairness != nil {
		parts = append(parts, "fairness="+*p.Fairness)
	}
	if p.Models != nil {
		parts = append(parts, "models="+strings.Join(p.Models, ","))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// auditCmd is `strata audit list|verify`: the hash-chained log of administrative actions.
func auditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "List and verify the hash-chained audit log of admin actions"}
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the audit log's hash chain; fails naming the first altered, removed or reordered entry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				n, err := a.VerifyAudit(cmd.Context())
				if err != nil {
					return fmt.Errorf("audit log NOT verified after %d good entries: %w", n, err)
				}
				es, err := a.Audit(cmd.Context())
				if err != nil {
					return err
				}
				head := "(empty)"
				if len(es) > 0 {
					head = fmt.Sprintf("%x", es[len(es)-1].Hash)
				}
				fmt.Fprintf(g.stdout, "audit log verified: %d entries, head %s\n", n, head)
				return nil
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the audit log, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				es, err := a.Audit(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tDETAIL")
				for _, e := range es {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.Format(time.RFC3339), e.Actor, e.Action, e.Target, e.Detail)
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(verify, list)
	return cmd
}

// gpuCostsCmd is `strata prices gpu set|list`: the GPU cost table (micro-USD per GPU-hour).
func gpuCostsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "gpu", Short: "Set and list GPU costs (micro-USD per GPU-hour, with effective dates)"}
	var perHour int64
	var effective string
	set := &cobra.Command{
		Use:   "set GPU --per-hour-micros N [--effective RFC3339]",
		Short: "Add a GPU cost entry (an entry of the same GPU and instant is replaced)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			at := time.Now()
			if effective != "" {
				var err error
				if at, err = time.Parse(time.RFC3339, effective); err != nil {
					return fmt.Errorf("--effective: %w", err)
				}
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				c, err := a.SetGPUCost(cmd.Context(), args[0], at, perHour)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "cost of %s from %s: %d micro-USD per GPU-hour\n", c.GPU, c.EffectiveAt.Format(time.RFC3339), c.MicrosPerHour)
				return nil
			})
		},
	}
	set.Flags().Int64Var(&perHour, "per-hour-micros", 0, "micro-USD per GPU-hour (2500000 = $2.50/h)")
	set.Flags().StringVar(&effective, "effective", "", "when the cost starts to apply (default: now)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the GPU cost table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				cs, err := a.GPUCosts(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GPU\tEFFECTIVE\tPER HOUR (micro-USD)")
				for _, c := range cs {
					fmt.Fprintf(tw, "%s\t%s\t%d\n", c.GPU, c.EffectiveAt.Format(time.RFC3339), c.MicrosPerHour)
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(set, list)
	return cmd
}

// billRerateCmd is `strata bill rerate --tenant NAME --period YYYY-MM`: POST /admin/v1/bills/rerate.
func billRerateCmd(g *globals) *cobra.Command {
	var tenant, period string
	cmd := &cobra.Command{
		Use:   "rerate --tenant NAME --period YYYY-MM",
		Short: "Re-rate a tenant's month with the price book as it stands now and store it as a new bill version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				prev, cur, _, err := a.Rerate(cmd.Context(), tenant, period)
				if err != nil {
					return err
				}
				if prev == nil {
					fmt.Fprintf(g.stdout, "%s %s rated: version %d, cost %s USD, GPU cost %s USD\n", tenant, period, cur.Version,
						gateway.FormatMicros(cur.CostMicros), gateway.FormatMicros(cur.GPUCostMicros))
					return nil
				}
				fmt.Fprintf(g.stdout, "%s %s re-rated: version %d, cost %s USD (was %s, change %s), GPU cost %s USD\n", tenant, period, cur.Version,
					gateway.FormatMicros(cur.CostMicros), gateway.FormatMicros(prev.CostMicros), gateway.FormatMicros(cur.CostMicros-prev.CostMicros),
					gateway.FormatMicros(cur.GPUCostMicros))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant name (required)")
	cmd.Flags().StringVar(&period, "period", "", "calendar month YYYY-MM (required)")
	_ = cmd.MarkFlagRequired("tenant")
	_ = cmd.MarkFlagRequired("period")
	return cmd
}

// billHistoryCmd is `strata bill history`: GET /admin/v1/bills/history.
func billHistoryCmd(g *globals) *cobra.Command {
	var tenant, period string
	cmd := &cobra.Command{
		Use:   "history [--tenant NAME] [--period YYYY-MM]",
		Short: "List stored bill versions (one per rating)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				bs, err := a.Bills(cmd.Context(), tenant, period)
				if err != nil {
					return err
				}
				tenants, err := tenantNames(cmd.Context(), a)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TENANT\tPERIOD\tVERSION\tRATED\tBY\tCOST USD\tGPU COST USD")
				for _, b := range bs {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", tenants[b.TenantID], b.Period, b.Version, b.RatedAt.Format(time.RFC3339), b.Actor,
						gateway.FormatMicros(b.CostMicros), gateway.FormatMicros(b.GPUCostMicros))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant")
	cmd.Flags().StringVar(&period, "period", "", "only this month YYYY-MM")
	return cmd
}

// policyShowCmd is `strata policy show NAME` / `--key ID`: overrides and the effective policy.
func policyShowCmd(g *globals) *cobra.Command {
	var keyID string
	cmd := &cobra.Command{
		Use:   "show [NAME | --key ID]",
		Short: "Show a tenant's (or key's) tier, overrides and effective policy",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (keyID != "") {
				return fmt.Errorf("give a tenant name or --key, not both")
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				var tier string
				var over, eff config.Policy
				if keyID != "" {
					k, err := a.Key(cmd.Context(), keyID)
					if err != nil {
						return err
					}
					t, err := a.TenantByID(cmd.Context(), k.TenantID)
					if err != nil {
						return err
					}
					tier, over, eff = t.Tier, k.Policy, a.EffectivePolicy(t, k)
				} else {
					t, err := a.Tenant(cmd.Context(), args[0])
					if err != nil {
						return err
					}
					tier, over, eff = t.Tier, t.Policy, a.EffectivePolicy(t, nil)
				}
				fmt.Fprintf(g.stdout, "tier:      %s\noverrides: %s\neffective: %s\n", dashIfEmpty(tier), policyText(over), policyText(eff))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&keyID, "key", "", "show this key's policy")
	return cmd
}
