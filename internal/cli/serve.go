package cli

import (
	"fmt"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/stack"
)

func serveCmd(g *globals) *cobra.Command {
	var listen, layers, upstream string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the stack: the OpenAI API backed by platform -> gateway -> router -> engines",
		Long: `Run the stack. With no flags: three simulated vLLM replicas, a SQLite database in the
data directory, and on first start a development tenant whose API key is printed once.
With --config FILE listing engines, the same stack fronts real vLLM (or any OpenAI-compatible)
servers. --layers runs a part of the chain and reaches the next layer at --upstream.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			flags := cmd.Flags()
			cfg, err := g.loadConfig(func(c *config.Config) {
				if flags.Changed("listen") {
					c.Listen = listen
				}
				if flags.Changed("layers") {
					c.Layers = splitList(layers)
				}
				if flags.Changed("upstream") {
					c.Upstream = upstream
				}
			})
			if err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			ctx := cmd.Context()
			st, err := stack.New(ctx, cfg, log)
			if err != nil {
				ln.Close()
				return err
			}
			defer st.Close()
			st.Serve(ln)
			if st.DevKey != "" {
				printDevKey(g, cfg, "http://"+ln.Addr().String(), st.DevKey)
			}
			<-ctx.Done()
			log.Info("shutting down")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8080", "address of the front door (host:port)")
	f.StringVar(&layers, "layers", "", "comma-separated layers to run: platform,gateway,router,engine (default all)")
	f.StringVar(&upstream, "upstream", "", "base URL of the next layer when the lowest layer run here is platform or gateway")
	return cmd
}

// printDevKey shows the development key once, on stdout (never in the log), with a curl line.
func printDevKey(g *globals, cfg *config.Config, base, key string) {
	model := cfg.Sim.ServedModelName
	if len(cfg.Engines) > 0 {
		model = "MODEL"
		if len(cfg.Engines[0].Models) > 0 {
			model = cfg.Engines[0].Models[0]
		}
	}
	fmt.Fprintf(g.stdout, `
Created the development tenant %q. Its API key is shown only this once:

    %s

Try it:

    curl -N %s/v1/chat/completions \
      -H "Authorization: Bearer %s" -H "Content-Type: application/json" \
      -d '{"model":"%s","stream":true,"messages":[{"role":"user","content":"Say hello"}]}'

`, *cfg.Gateway.DevTenant, key, base, key, model)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
