package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/replay"
	"github.com/strata-inference/strata/internal/router/plugins"
)

// replayCmd is `strata replay`: a trace through the router's real scheduler against simulated
// vLLM replicas in virtual time (or live endpoints in real time), one run per policy, reported
// as a table and optionally JSON and an SVG chart.
func replayCmd(g *globals) *cobra.Command {
	var (
		trace, format, model, gpu, policies, jsonOut, chart string
		endpoints, servedModel                              string
		replicas, limit, numBlocks                          int
		rateScale                                           float64
		seed                                                uint64
		markdown, quiet                                     bool
	)
	cmd := &cobra.Command{
		Use:   "replay --trace FILE",
		Short: "Replay a request trace through the router's scheduler against simulated replicas (virtual time) or live endpoints",
		Long: `Replay a Mooncake (JSONL) or Azure LLM inference (CSV) trace through the router's scheduler
against N simulated vLLM replicas in virtual time, once per policy, and report for each: prefix-cache
hit ratio in tokens (and the ideal ratio of one infinite cache), TTFT p50/p90/p99, ITL p50/p99, output
tokens/s, completed requests and load spread (coefficient of variation of the tokens each replica
computed), as a table, as JSON (--json) and as an SVG chart (--chart). The last line gives the
simulated-to-wall speed ratio.

With --endpoints URL,... the trace is replayed in real time against live OpenAI-compatible engines
(vLLM, strata sim) through Strata's real router, started in-process on a loopback port with each
policy as its scheduler; prompts are sent as token ids to /v1/completions.

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
			var urls []string
			for _, u := range strings.Split(endpoints, ",") {
				if u = strings.TrimSpace(u); u != "" {
					urls = append(urls, u)
				}
			}
			showProgress := !quiet && isTerminal(g.stderr)
			var results []*replay.Result
			var virtual, wall float64
			for _, p := range strings.Split(policies, ",") {
				p = strings.TrimSpace(p)
				epc, err := policyConfig(p)
				if err != nil {
					return err
				}
				var bar *progressbar.ProgressBar
				progress := func(int, int) {}
				if showProgress {
					bar = newBar(g.stderr, p, len(rows))
					progress = func(done, _ int) { _ = bar.Set(done) }
				}
				start := time.Now()
				var res *replay.Result
				if len(urls) > 0 {
					res, err = replay.RunLive(cmd.Context(), rows, p, epc, replay.LiveOptions{Endpoints: urls,
						Model: servedModel, RateScale: rateScale, Progress: progress})
				} else {
					res, err = replay.RunConfig(cmd.Context(), rows, p, epc, replay.Options{Replicas: replicas,
						Model: model, GPU: gpu, RateScale: rateScale, NumGPUBlocks: numBlocks, Seed: seed, Progress: progress})
				}
				if bar != nil {
					_ = bar.Finish()
					fmt.Fprintln(g.stderr)
				}
				if err != nil {
					return err
				}
				res.WallSeconds = time.Since(start).Seconds()
				virtual += res.Duration
				wall += res.WallSeconds
				results = append(results, res)
			}
			if err := replay.WriteTable(g.stdout, results, markdown); err != nil {
				return err
			}
			mode := "simulated"
			if len(urls) > 0 {
				mode = "replayed"
			}
			if _, err := fmt.Fprintf(g.stdout, "%.0f s %s in %.1f s wall: %.0fx real time\n", virtual, mode, wall, virtual/max(wall, 1e-9)); err != nil {
				return err
			}
			n := replicas
			if len(urls) > 0 {
				n = len(urls)
			}
			if chart != "" {
				var sb strings.Builder
				title := fmt.Sprintf("%s: %d requests, %d x %s on %s, rate x%g", filepath.Base(trace), len(rows), n, model, gpu, rateScale)
				if len(urls) > 0 {
					title = fmt.Sprintf("%s: %d requests, %d live endpoints, rate x%g", filepath.Base(trace), len(rows), n, rateScale)
				}
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
					Endpoints []string         `json:"endpoints,omitempty"`
					Model     string           `json:"model"`
					GPU       string           `json:"gpu,omitempty"`
					RateScale float64          `json:"rate_scale"`
					Results   []*replay.Result `json:"results"`
				}{trace, format, len(rows), n, urls, model, gpu, rateScale, results}, "", "  ")
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
	fl.IntVar(&numBlocks, "num-gpu-blocks", 0, "KV cache blocks of 16 tokens per replica (0: derived from the model and GPU as vLLM does)")
	fl.Uint64Var(&seed, "seed", 1, "seed of the random pickers and tie-breaks")
	fl.StringVar(&endpoints, "endpoints", "", "comma-separated base URLs of live OpenAI-compatible engines: replay in real time through the router instead of simulating")
	fl.StringVar(&servedModel, "served-model", "", "with --endpoints: the model name to request (default: the first one the endpoints list)")
	fl.StringVar(&jsonOut, "json", "", "also write the results as JSON to this file")
	fl.StringVar(&chart, "chart", "", "also draw TTFT percentiles and hit ratios as an SVG image to this file")
	fl.BoolVar(&markdown, "markdown", false, "print the table as Markdown")
	fl.BoolVar(&quiet, "quiet", false, "no progress bar on stderr")
	return cmd
}

// policyConfig resolves a policy: a name of replay.Policies, or a YAML config file whose
// router.scheduler (else its flat router weights) is the profile.
func policyConfig(p string) (config.EndpointPickerConfig, error) {
	if isYAML(p) {
		cfg, err := config.Load(p)
		if err != nil {
			return config.EndpointPickerConfig{}, err
		}
		if cfg.Router.Scheduler != nil {
			return *cfg.Router.Scheduler, nil
		}
		return plugins.DefaultProfile(cfg.Router), nil
	}
	return replay.PolicyConfig(p)
}

// isYAML reports whether a policy names a config file rather than a built-in policy.
func isYAML(p string) bool {
	ext := filepath.Ext(p)
	return ext == ".yaml" || ext == ".yml"
}

// isTerminal reports whether w is a terminal, where a progress bar may redraw itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newBar is the progress bar of one policy's run, on w.
func newBar(w io.Writer, policy string, total int) *progressbar.ProgressBar {
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(fmt.Sprintf("%-18s", policy)),
		progressbar.OptionShowCount(), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionSetPredictTime(true))
}

// replaySynthCmd is `strata replay synth`: writes a shared-prefix workload (tenants with their
// own system prompts, multi-turn conversations, agent loops) as a Mooncake JSONL trace that
// `strata replay --format mooncake` reads.
func replaySynthCmd(g *globals) *cobra.Command {
	var (
		o   replay.SynthOptions
		out string
	)
	cmd := &cobra.Command{
		Use:   "synth --out FILE",
		Short: "Write a synthetic multi-tenant shared-prefix workload (conversations, agent loops) as a Mooncake JSONL trace",
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
	fl.IntVar(&o.QuestionTokens, "question-tokens", 1000, "tokens of each user question")
	fl.IntVar(&o.OutputTokens, "output-tokens", 200, "answer tokens per conversation turn")
	fl.IntVar(&o.Requests, "requests", 6000, "number of requests")
	fl.Float64Var(&o.Rate, "rate", 20, "mean arrival rate, requests per second")
	fl.IntVar(&o.Turns, "turns", 1, "turns per conversation (1: independent questions)")
	fl.DurationVar(&o.ThinkTime, "think-time", 20*time.Second, "mean time between two turns of a conversation")
	fl.Float64Var(&o.AgentFraction, "agent-fraction", 0, "share of sessions that are agent loops, in [0,1]")
	fl.IntVar(&o.AgentSteps, "agent-steps", 6, "tool calls per agent loop")
	fl.IntVar(&o.ToolTokens, "tool-tokens", 400, "tokens of each tool result")
	fl.IntVar(&o.AgentOutputTokens, "agent-output-tokens", 60, "tokens of each assistant tool call")
	fl.Uint64Var(&o.Seed, "seed", 1, "seed")
	return cmd
}
