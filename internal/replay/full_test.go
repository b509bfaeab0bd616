package replay

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

// TestFullTrace replays the whole Mooncake conversation trace when STRATA_REPLAY_FULL is set
// (its value: the rate scale; STRATA_REPLAY_POLICIES: comma-separated policies or Strata config
// files whose router.scheduler is the profile, default all; STRATA_REPLAY_TRACE: another
// Mooncake JSONL trace);
// it measures, it asserts nothing about timing. For profiling:
//
//	STRATA_REPLAY_FULL=2.5 go test -run TestFullTrace -cpuprofile cpu.out ./internal/replay
func TestFullTrace(t *testing.T) {
	scale := os.Getenv("STRATA_REPLAY_FULL")
	if scale == "" {
		t.Skip("set STRATA_REPLAY_FULL=<rate scale> to replay the whole trace")
	}
	rs, err := strconv.ParseFloat(scale, 64)
	require.NoError(t, err)
	trace := "../../../shared/data/traces/mooncake_conversation_trace.jsonl"
	if p := os.Getenv("STRATA_REPLAY_TRACE"); p != "" {
		trace = p
	}
	f, err := os.Open(trace)
	if err != nil {
		t.Skipf("shared trace not available: %v", err)
	}
	defer f.Close()
	rows, err := ReadTrace(f, FormatMooncake, 0)
	require.NoError(t, err)
	policies := Policies
	if p := os.Getenv("STRATA_REPLAY_POLICIES"); p != "" {
		policies = strings.Split(p, ",")
	}
	var results []*Result
	for _, p := range policies {
		start := time.Now()
		epc, err := PolicyConfig(p)
		if strings.HasSuffix(p, ".yaml") {
			var cfg *config.Config
			cfg, err = config.Load(p)
			require.NoError(t, err)
			epc = *cfg.Router.Scheduler
		}
		require.NoError(t, err)
		res, err := RunConfig(context.Background(), rows, p, epc, Options{Replicas: 8, Model: "Llama-3.1-8B", GPU: "H100-SXM", RateScale: rs, Seed: 1})
		require.NoError(t, err, p)
		res.WallSeconds = time.Since(start).Seconds()
		t.Logf("%s: %.0f s virtual in %.1f s wall", p, res.Duration, res.WallSeconds)
		results = append(results, res)
	}
	var b strings.Builder
	require.NoError(t, WriteTable(&b, results, false))
	t.Log("\n" + b.String())
}

// TestWriteSynth writes the 150-tenant workload of docs/benchmarks.md to $STRATA_REPLAY_SYNTH_OUT
// (what `strata replay synth` writes with the same flags), when set.
func TestWriteSynth(t *testing.T) {
	out := os.Getenv("STRATA_REPLAY_SYNTH_OUT")
	if out == "" {
		t.Skip("set STRATA_REPLAY_SYNTH_OUT=<file>")
	}
	rows, err := Synthesize(SynthOptions{Tenants: 150, PrefixTokens: 6000, QuestionTokens: 1000, OutputTokens: 200,
		Requests: 8000, Rate: 20, Turns: 3, AgentFraction: 0.2, Seed: 1})
	require.NoError(t, err)
	f, err := os.Create(out)
	require.NoError(t, err)
	require.NoError(t, WriteMooncake(f, rows))
	require.NoError(t, f.Close())
}

// TestRedrawChart redraws the SVG of a `strata replay --json` file ($STRATA_REPLAY_CHART_JSON)
// to $STRATA_REPLAY_CHART_OUT with title $STRATA_REPLAY_CHART_TITLE, when set.
func TestRedrawChart(t *testing.T) {
	in, out := os.Getenv("STRATA_REPLAY_CHART_JSON"), os.Getenv("STRATA_REPLAY_CHART_OUT")
	if in == "" || out == "" {
		t.Skip("set STRATA_REPLAY_CHART_JSON and STRATA_REPLAY_CHART_OUT")
	}
	b, err := os.ReadFile(in)
	require.NoError(t, err)
	var v struct{ Results []*Result }
	require.NoError(t, json.Unmarshal(b, &v))
	for _, r := range v.Results {
		r.Policy = filepath.Base(r.Policy)
	}
	f, err := os.Create(out)
	require.NoError(t, err)
	require.NoError(t, WriteSVG(f, os.Getenv("STRATA_REPLAY_CHART_TITLE"), v.Results))
	require.NoError(t, f.Close())
}
