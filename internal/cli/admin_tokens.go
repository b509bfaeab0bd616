package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-inference/strata/internal/gateway"
)

// adminTokensCmd is `strata admin-tokens create|list|revoke`: the scoped tokens of the admin REST
// API (/admin/v1), separate from tenant API keys. Every change is written to the audit log.
func adminTokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "admin-tokens", Short: "Create, list and revoke scoped admin API tokens (/admin/v1)"}
	var scopes, name string
	create := &cobra.Command{
		Use:   "create --scopes read,keys,policy,billing [--name LABEL]",
		Short: "Create an admin token; the token is printed once",
		Long: "Creates an admin token sk-strata-admin-... for the admin REST API. Scopes:\n" +
			"  read     list tenants and keys\n" +
			"  keys     create and revoke tenant API keys\n" +
			"  policy   create tenants (limits, model allowlist)\n" +
			"  billing  read the usage ledger\n" +
			"Only HMAC-SHA-256(server secret, token) is stored; the creation is audited.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := gateway.ParseScopes(scopes)
			if err != nil {
				return err
			}
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				tok, t, err := a.CreateAdminToken(cmd.Context(), name, sc)
				if tok == "" {
					return err
				}
				fmt.Fprintf(g.stdout, "id:     %s\nscopes: %s\ntoken:  %s\n(the token is shown only this once)\n",
					t.ID, strings.Join(t.Scopes, ","), tok)
				return err
			})
		},
	}
	create.Flags().StringVar(&scopes, "scopes", "", "comma-separated scopes: read, keys, policy, billing (required)")
	create.Flags().StringVar(&name, "name", "", "a label saying who or what uses the token")
	_ = create.MarkFlagRequired("scopes")

	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens (never the tokens themselves: id, visible prefix, scopes, state)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd.Context(), g, func(a *gateway.Admin) error {
				toks, err := a.ListAdminTokens(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tSCOPES\tCREATED\tSTATE")
				for _, t := range toks {
					state := "active"
					if !t.RevokedAt.IsZero() {
						state = "revoked " + t.RevokedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s…\t%s\t%s\t%s\n", t.ID, t.Name, t.Prefix, strings.Join(t.Scopes, ","),
						t.CreatedAt.UTC().Format(time.RFC3339), state)
				}
				return tw.Flush()
			})
		},
	}

	revoke := revokeCmd(g, "Revoke an admin token at once", (*gateway.Admin).RevokeAdminToken)
	cmd.AddCommand(create, list, revoke)
	return cmd
}
