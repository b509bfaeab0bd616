package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/replay"
	"github.com/strata-inference/strata/internal/router/plugins"
)

// replayCmd is `strata replay`: a trace through the router's real scheduler against simulated
// vLLM replicas in virtual time, one run per policy, reported as a table and optionally JSON.
func replayCmd(g *globals) *cobra.Command {
	var (
		trace, format, model, gpu, policies, jsonOut, chart string
		replicas, limit, numBlocks                          int
		rateScale                                           float64
		seed                                                uint64
		markdown, quiet                                     bool
	)
	cmd := &cobra.Command{
		Use:   "replay --trace FILE",
		Short: "Replay a request trace through the router's scheduler against simulated replicas, in virtual time",
		Long: `Replay a Mooncake (JSONL) or Azure LLM inference (CSV) trace through the router's scheduler
against N simulated vLLM replicas in virtual time, once per policy, and report for each: prefix-cache
hit ratio in tokens (and the ideal ratio of one infinite cache), TTFT p50/p90/p99, ITL p50/p99, output
tokens/s, completed requests and load spread (coefficient of variation of the tokens each replica
computed), as a table, as JSON (--json) and as an SVG chart (--chart).

Policies: ` + strings.Join(replay.Policies, ", ") + `, or a YAML config file (*.yaml) whose
router.scheduler (or, when unset, router weights) defines the profile.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if trace == "" {
				return fmt.Errorf("--trace: required")
			}
			f, err := os.Open(trace)
			if err != nil {
				return err
			}
			rows, err := replay.ReadTrace(f, format, limit)
			f.Close()
			if err != nil {
				return fmt.Errorf("trace %s: %w", trace, err)
			}
			if len(rows) == 0 {
				return fmt.Errorf("trace %s: no requests", trace)
			}
			var results []*replay.Result
			for _, p := range strings.Split(policies, ",") {
				p = strings.TrimSpace(p)
				opt := replay.Options{Replicas: replicas, Model: model, GPU: gpu, RateScale: rateScale,
					NumGPUBlocks: numBlocks, Seed: seed}
				if !quiet {
					opt.Progress = progress(g, p)
				}
				start := time.Now()
				var res *replay.Result
				if ext := filepath.Ext(p); ext == ".yaml" || ext == ".yml" {
					cfg, err := config.Load(p)
					if err != nil {
						return err
					}
					epc := plugins.DefaultProfile(cfg.Router)
					if cfg.Router.Scheduler != nil {
						epc = *cfg.Router.Scheduler
					}
					res, err = replay.RunConfig(cmd.Context(), rows, p, epc, opt)
					if err != nil {
						return err
					}
				} else if res, err = replay.Run(cmd.Context(), rows, p, opt); err != nil {
					return err
				}
				if !quiet {
					fmt.Fprintf(g.stderr, "\r%-14s done: %d requests in %.1fs of virtual time, %.1fs wall\n",
						p, res.Completed, res.Duration, time.Since(start).Seconds())
				}
				results = append(results, res)
			}
			if err := replay.WriteTable(g.stdout, results, markdown); err != nil {
				return err
			}
			if chart != "" {
				var sb strings.Builder
				title := fmt.Sprintf("%s: %d requests, %d x %s on %s, rate x%g", filepath.Base(trace), len(rows), replicas, model, gpu, rateScale)
				if err := replay.WriteSVG(&sb, title, results); err != nil {
					return err
				}
				if err := os.WriteFile(chart, []byte(sb.String()), 0o644); err != nil {
					return err
				}
			}
			if jsonOut != "" {
				b, err := json.MarshalIndent(struct {
					Trace     string           `json:"trace"`
					Format    string           `json:"format"`
					Requests  int              `json:"requests"`
					Replicas  int              `json:"replicas"`
					Model     string           `json:"model"`
					GPU       string           `json:"gpu"`
					RateScale float64          `json:"rate_scale"`
					Results   []*replay.Result `json:"results"`
				}{trace, format, len(rows), replicas, model, gpu, rateScale, results}, "", "  ")
				if err != nil {
					return err
				}
				return os.WriteFile(jsonOut, append(b, '\n'), 0o644)
			}
			return nil
		},
	}
	cmd.AddCommand(replaySynthCmd(g))
	fl := cmd.Flags()
	fl.StringVar(&trace, "trace", "", "trace file (Mooncake JSONL or Azure CSV)")
	fl.StringVar(&format, "format", replay.FormatMooncake, "trace format: mooncake or azure")
	fl.IntVar(&replicas, "replicas", 8, "number of simulated replicas")
	fl.StringVar(&model, "model", "Llama-3.1-8B", "simulated model profile")
	fl.StringVar(&gpu, "gpu", "H100-SXM", "simulated GPU profile")
	fl.StringVar(&policies, "policy", strings.Join(replay.Policies, ","), "comma-separated policies (names or *.yaml configs)")
	fl.Float64Var(&rateScale, "rate-scale", 1, "multiply the trace's arrival rate by this factor")
	fl.IntVar(&limit, "limit", 0, "replay only the first N requests (0: all)")
	fl.IntVar(&numBlocks, "num-gpu-blocks", 0, "KV cache blocks of 16 tokens per replica (0: 24576, Llama-3-8B on an 80 GB GPU)")
	fl.Uint64Var(&seed, "seed", 1, "seed of the random pickers and tie-breaks")
	fl.StringVar(&jsonOut, "json", "", "also write the results as JSON to this file")
	fl.StringVar(&chart, "chart", "", "also draw TTFT percentiles and hit ratios as an SVG image to this file")
	fl.BoolVar(&markdown, "markdown", false, "print the table as Markdown")
	fl.BoolVar(&quiet, "quiet", false, "no progress on stderr")
	return cmd
}

// replaySynthCmd is `strata replay synth`: writes a shared-prefix workload (tenants with their
// own system prompts) as a Mooncake JSONL trace that `strata replay --format mooncake` reads.
func replaySynthCmd(g *globals) *cobra.Command {
	var (
		o   replay.SynthOptions
		out string
	)
	cmd := &cobra.Command{
		Use:   "synth --out FILE",
		Short: "Write a synthetic multi-tenant shared-prefix workload as a Mooncake JSONL trace",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if out == "" {
				return fmt.Errorf("--out: required")
			}
			rows, err := replay.Synthesize(o)
			if err != nil {
				return err
			}
			f, err := os.Create(out)
			if err != nil {
				return err
			}
			if err := replay.WriteMooncake(f, rows); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "wrote %d requests (%d tenants, %.0f s) to %s\n", len(rows), o.Tenants, rows[len(rows)-1].Arrival.Seconds(), out)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&out, "out", "", "trace file to write (Mooncake JSONL)")
	fl.IntVar(&o.Tenants, "tenants", 150, "tenants, each with its own system prompt")
	fl.IntVar(&o.PrefixTokens, "prefix-tokens", 6000, "system prompt tokens per tenant")
	fl.IntVar(&o.QuestionTokens, "question-tokens", 1000, "tokens unique to each request")
	fl.IntVar(&o.OutputTokens, "output-tokens", 200, "answer tokens per request")
	fl.IntVar(&o.Requests, "requests", 6000, "number of requests")
	fl.Float64Var(&o.Rate, "rate", 20, "Poisson arrival rate, requests per second")
	fl.Uint64Var(&o.Seed, "seed", 1, "seed")
	return cmd
}

// progress returns a callback printing "policy  42%" on stderr at each new percent.
func progress(g *globals, policy string) func(done, total int) {
	last := -1
	return func(done, total int) {
		if pct := done * 100 / total; pct != last {
			last = pct
			fmt.Fprintf(g.stderr, "\r%-14s %3d%%", policy, pct)
		}
	}
}
