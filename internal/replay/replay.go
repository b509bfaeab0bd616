// Package replay replays a request trace through the router's real scheduler
// (internal/router/scheduling, built from an EndpointPickerConfig by internal/router/plugins)
// against simulated vLLM replicas in virtual time: an hour of traffic in seconds, so a routing
// policy's effect on prefix-cache hits, TTFT, ITL and load spread can be seen before deploying it.
//
// It is a composition package: it imports the router's scheduler and the engine simulator
// (internal/engine/sim), which layer packages may not do.
package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/router/plugins"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Policies are the routing policies Run knows, by name.
var Policies = []string{"round-robin", "random", "load", "llm-d-approx", "precise-prefix", "predicted-latency", "default"}

// preciseScorerType is the plugin type of the precise (KV-event fed) prefix-cache scorer, llm-d's
// name for it.
const preciseScorerType = "precise-prefix-cache-scorer"

// PolicyConfig returns the EndpointPickerConfig of a named policy:
//   - round-robin, random: the picker alone (scores ignored);
//   - load: queue-scorer 1 + kv-cache-utilization-scorer 1, max-score-picker;
//   - llm-d-approx: queue-scorer 2 + kv-cache-utilization-scorer 2 + prefix-cache-scorer 3
//     (llm-d's former default, its approximate prefix parameters blockSize 64 and
//     lruCapacityPerServer 31250);
//   - precise-prefix: queue-scorer 2 + kv-cache-utilization-scorer 2 +
//     precise-prefix-cache-scorer 3 (llm-d's precise prefix-cache profile: the scorer reads an
//     index fed by the engines' KV events);
//   - predicted-latency: predicted-latency-scorer 2 (prefill work queued + uncached prompt,
//     in tokens) + prefix-cache-scorer 3 + kv-cache-utilization-scorer 1, max-score-picker;
//   - default: Strata's default profile (plugins.DefaultProfile of config.Default().Router).
func PolicyConfig(name string) (config.EndpointPickerConfig, error) {
	one := func(typ string) config.EndpointPickerConfig {
		return config.EndpointPickerConfig{Plugins: []config.PluginSpec{{Type: typ}},
			SchedulingProfiles: []config.SchedulingProfile{{Name: name, Plugins: []config.ProfilePlugin{{PluginRef: typ}}}}}
	}
	w := func(v float64) *float64 { return &v }
	switch name {
	case "round-robin":
		return one("round-robin-picker"), nil
	case "random":
		return one("random-picker"), nil
	case "load":
		return config.EndpointPickerConfig{
			Plugins: []config.PluginSpec{{Type: "queue-scorer"}, {Type: "kv-cache-utilization-scorer"}},
			SchedulingProfiles: []config.SchedulingProfile{{Name: name, Plugins: []config.ProfilePlugin{
				{PluginRef: "queue-scorer", Weight: w(1)}, {PluginRef: "kv-cache-utilization-scorer", Weight: w(1)}}}},
		}, nil
	case "llm-d-approx":
		return config.EndpointPickerConfig{
			Plugins: []config.PluginSpec{{Type: "queue-scorer"}, {Type: "kv-cache-utilization-scorer"},
				{Type: "prefix-cache-scorer", Parameters: json.RawMessage(`{"blockSize":64,"lruCapacityPerServer":31250}`)}},
			SchedulingProfiles: []config.SchedulingProfile{{Name: name, Plugins: []config.ProfilePlugin{
				{PluginRef: "queue-scorer", Weight: w(2)}, {PluginRef: "kv-cache-utilization-scorer", Weight: w(2)},
				{PluginRef: "prefix-cache-scorer", Weight: w(3)}}}},
		}, nil
	case "precise-prefix":
		return config.EndpointPickerConfig{
			Plugins: []config.PluginSpec{{Type: "queue-scorer"}, {Type: "kv-cache-utilization-scorer"}, {Type: preciseScorerType}},
			SchedulingProfiles: []config.SchedulingProfile{{Name: name, Plugins: []config.ProfilePlugin{
				{PluginRef: "queue-scorer", Weight: w(2)}, {PluginRef: "kv-cache-utilization-scorer", Weight: w(2)},
				{PluginRef: preciseScorerType, Weight: w(3)}}}},
		}, nil
	case "predicted-latency":
		return config.EndpointPickerConfig{
			Plugins: []config.PluginSpec{{Type: "prefix-cache-scorer"}, {Type: "predicted-latency-scorer"}, {Type: "kv-cache-utilization-scorer"}},
			SchedulingProfiles: []config.SchedulingProfile{{Name: name, Plugins: []config.ProfilePlugin{
				{PluginRef: "predicted-latency-scorer", Weight: w(2)}, {PluginRef: "prefix-cache-scorer", Weight: w(3)},
				{PluginRef: "kv-cache-utilization-scorer", Weight: w(1)}}}},
		}, nil
	case "default":
		return plugins.DefaultProfile(config.Default().Router), nil
	}
	return config.EndpointPickerConfig{}, fmt.Errorf("unknown policy %q (want one of %s)", name, strings.Join(Policies, ", "))
}

// Options configures a replay.
type Options struct {
	// Replicas is the number of simulated replicas (>= 1).
	Replicas int
	// Model and GPU name sim profiles (sim.LookupModel, sim.LookupGPU).
	Model, GPU string
	// RateScale multiplies the arrival rate: arrivals at trace time t happen at t / RateScale.
	// 0 means 1.
	RateScale float64
	// BlockSize (tokens, default 16), NumGPUBlocks (default: derived from the model and GPU as
	// vLLM does), MaxNumSeqs (default 256) and MaxBatchedTokens (default 8192) configure every
	// replica as vLLM's engine arguments.
	BlockSize, NumGPUBlocks, MaxNumSeqs, MaxBatchedTokens int
	// ScrapeInterval is how often the scheduler's view of engine metrics (waiting, running, KV
	// usage) is refreshed, as the router's scrape_interval. Default: config.Default()'s (50ms).
	// The router's own in-flight counts are always exact.
	ScrapeInterval time.Duration
	// Seed seeds the random pickers and tie-breaks (runs are deterministic for a seed).
	Seed uint64
	// Progress, if set, is called with the number of finished requests as the replay advances.
	Progress func(done, total int)
}

func (o *Options) defaults() error {
	if o.Replicas < 1 {
		return fmt.Errorf("replicas: must be at least 1, got %d", o.Replicas)
	}
	if o.RateScale == 0 {
		o.RateScale = 1
	}
	if !(o.RateScale > 0) || math.IsInf(o.RateScale, 0) {
		return fmt.Errorf("rate scale: must be positive, got %g", o.RateScale)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.BlockSize, 16)
	def(&o.MaxNumSeqs, 256)
	def(&o.MaxBatchedTokens, 8192)
	if o.ScrapeInterval <= 0 {
		o.ScrapeInterval = config.Default().Router.ScrapeInterval.D()
	}
	return nil
}

// Percentiles of a latency distribution, in seconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// Result is one policy's outcome.
type Result struct {
	Policy string `json:"policy"`
	// Completed requests; Skipped ones could never fit one replica's KV cache (or context);
	// Failed ones got an error from a live endpoint (RunLive only).
	Completed int `json:"completed"`
	Skipped   int `json:"skipped"`
	Failed    int `json:"failed"`
	// HitRatio is prompt tokens served from the replicas' prefix caches / prompt tokens.
	HitRatio float64 `json:"prefix_hit_ratio"`
	// IdealHitRatio is the same ratio for one infinite cache that saw every request (the upper
	// bound any routing can approach), at the same block granularity.
	IdealHitRatio float64 `json:"ideal_hit_ratio"`
	// TTFT (arrival to first token) and ITL (between consecutive tokens), seconds.
	TTFT Percentiles `json:"ttft_seconds"`
	ITL  Percentiles `json:"itl_seconds"`
	// OutputTokensPerSec is generated tokens / (last finish - first arrival).
	OutputTokensPerSec float64 `json:"output_tokens_per_second"`
	// LoadSpread is the coefficient of variation (stddev / mean) of the tokens each replica
	// computed (uncached prompt + output): 0 is perfectly even.
	LoadSpread float64 `json:"load_spread_cv"`
	// PerReplica is the number of requests each replica served.
	PerReplica []int `json:"requests_per_replica"`
	// Duration is the time from first arrival to last finish, seconds (virtual in Run).
	Duration float64 `json:"virtual_seconds"`
	// WallSeconds is the wall-clock time the run took (set by the caller that timed it).
	WallSeconds float64 `json:"wall_seconds,omitempty"`
	// PickMicros is the mean wall-clock cost of one scheduling decision, microseconds (Run only).
	PickMicros float64 `json:"pick_microseconds"`
}

// Run replays rows through the scheduler of policy (a name of Policies) and returns its result.
// The replay stops early with ctx's error when ctx is done.
func Run(ctx context.Context, rows []Row, policy string, opt Options) (*Result, error) {
	epc, err := PolicyConfig(policy)
	if err != nil {
		return nil, err
	}
	return RunConfig(ctx, rows, policy, epc, opt)
}

// modelName is the model every simulated replica serves; the scheduler's model filter needs one.
const modelName = "replay"

// request is one trace row inside a replay.
type request struct {
	row     *Row
	index   int   // row index: names the request and seeds its unique blocks
	tokens  []int // prompt then planned answer; dropped when the request finishes
	arrival time.Time
	replica int
	last    time.Time // previous token, zero before the first
}

// replica is one simulated engine as the replay loop drives it.
type replica interface {
	// fits reports whether a request of prompt+output tokens can ever run.
	fits(prompt, output int) bool
	// add queues q at now.
	add(q *request, now time.Time)
	// step starts the next step at now when idle, and returns the end of the step in flight;
	// ok is false when there is nothing to run.
	step(now time.Time) (end time.Time, ok bool)
	// complete ends the step in flight at its end: token is called for each sampled token,
	// finished for each request done (cached: its prompt tokens served from the prefix cache).
	complete(token func(q *request, at time.Time), finished func(q *request, at time.Time, cached int))
	// metrics is what a scrape of the engine's /metrics would report now.
	metrics() scheduling.Metrics
	// kvEvents appends to dst the KV events produced since the last call (none unless the
	// replicas were built to convert them); they stay valid until the replica's next step.
	kvEvents(dst []scheduling.KVEvent) []scheduling.KVEvent
}

// wantsKVEvents reports whether epc declares a plugin that consumes engine KV events, so that
// replicas convert theirs only when someone reads them.
func wantsKVEvents(epc config.EndpointPickerConfig) bool {
	for _, p := range epc.Plugins {
		if p.Type == preciseScorerType {
			return true
		}
	}
	return false
}

// RunConfig is Run with an explicit scheduler configuration (any EndpointPickerConfig), named
// name in the result.
//
// The replay mirrors the live router (internal/router router.go, endpoint.go): each decision
// sees every replica's last scrape (refreshed every ScrapeInterval of virtual time) and the
// router's own in-flight requests and prompt tokens (counted from the pick to the last token);
// KV events of each completed step reach Scheduler.HandleKVEvents at once; Request carries the
// prompt's token ids, its text (promptParts) and the row's session.
func RunConfig(ctx context.Context, rows []Row, name string, epc config.EndpointPickerConfig, opt Options) (*Result, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	sched, err := scheduling.Build(epc, plugins.Registry(), rand.NewPCG(opt.Seed, 0x5eed))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	reps, err := newReplicas(opt, wantsKVEvents(epc))
	if err != nil {
		return nil, err
	}
	n := len(reps)
	snaps := make([]scheduling.Endpoint, n)
	eps := make([]*scheduling.Endpoint, n)
	names := make([]string, n)
	for i := range snaps {
		names[i] = "replica-" + strconv.Itoa(i)
		snaps[i] = scheduling.Endpoint{Name: names[i], Models: []string{modelName}, ModelsKnown: true, Healthy: true}
		eps[i] = &snaps[i]
	}
	col := newCollector(name, n)
	ideal := newIdealCache(opt.BlockSize)
	epoch := time.Unix(0, 0)
	var (
		pickWall   time.Duration
		picks      int
		done, next int
		pending    int // routed and not finished
		inFlight   = make([]int, n)
		inFlightTk = make([]int, n)
		metrics    = make([]scheduling.Metrics, n)
		busy       = make([]bool, n)
		ends       = make([]time.Time, n)
		events     []scheduling.KVEvent
		nextScrape time.Time
	)
	scrape := func(now time.Time) {
		for i, r := range reps {
			metrics[i] = r.metrics()
		}
		nextScrape = now.Add(opt.ScrapeInterval)
	}
	scrape(epoch) // the router has scraped every replica once before the first request
	arrival := func(i int) time.Time {
		return epoch.Add(time.Duration(float64(rows[i].Arrival) / opt.RateScale))
	}
	// kick starts replica i's next step if it is idle, then hands the scheduler the KV events
	// the replica produced (only when some plugin consumes them).
	kick := func(i int, now time.Time) {
		ends[i], busy[i] = reps[i].step(now)
		if events = reps[i].kvEvents(events[:0]); len(events) > 0 {
			sched.HandleKVEvents(names[i], events)
		}
	}
	onToken := func(q *request, at time.Time) {
		col.token(q.arrival, q.last, at)
		q.last = at
	}
	var current int // replica whose step completes
	onFinished := func(q *request, at time.Time, cached int) {
		done++
		pending--
		inFlight[current]--
		inFlightTk[current] -= q.row.InputTokens
		col.finished(current, at, q.row.InputTokens, cached, max(1, q.row.OutputTokens))
		q.tokens = nil
		if opt.Progress != nil {
			opt.Progress(done+col.res.Skipped, len(rows))
		}
	}
	for iter := 0; ; iter++ {
		if iter%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		// The next event: a step end, else a metrics scrape (only while requests are pending),
		// else an arrival; ties in that order.
		var now time.Time
		kind, which := -1, -1
		for i := range reps {
			if busy[i] && (kind < 0 || ends[i].Before(now)) {
				now, kind, which = ends[i], 0, i
			}
		}
		if pending > 0 && (kind < 0 || nextScrape.Before(now)) {
			now, kind = nextScrape, 1
		}
		if next < len(rows) && (kind < 0 || arrival(next).Before(now)) {
			now, kind = arrival(next), 2
		}
		switch kind {
		case -1:
			res := col.result()
			if picks > 0 {
				res.PickMicros = float64(pickWall.Nanoseconds()) / 1e3 / float64(picks)
			}
			return res, nil
		case 0:
			current = which
			reps[which].complete(onToken, onFinished)
			if events = reps[which].kvEvents(events[:0]); len(events) > 0 {
				sched.HandleKVEvents(names[which], events)
			}
			kick(which, now)
		case 1:
			scrape(now)
		case 2:
			row := &rows[next]
			q := &request{row: row, index: next, arrival: now}
			next++
			if nextScrape.Before(now) { // scrapes pause while nothing is pending: catch up
				scrape(now)
			}
			if !reps[0].fits(row.InputTokens, max(1, row.OutputTokens)) {
				col.res.Skipped++
				continue
			}
			col.arrived(now, ideal.hit(row))
			q.tokens = requestTokens(row, q.index)
			prompt := q.tokens[:row.InputTokens:row.InputTokens]
			req := &scheduling.Request{Model: modelName, PromptParts: promptParts(prompt), PromptTokens: row.InputTokens,
				TokenIDs: prompt, Session: row.Session}
			for i := range snaps {
				snaps[i].Metrics, snaps[i].InFlight, snaps[i].InFlightTokens = metrics[i], inFlight[i], inFlightTk[i]
			}
			start := time.Now()
			picked, err := sched.Schedule(req, eps)
			pickWall += time.Since(start)
			picks++
			if err != nil {
				return nil, fmt.Errorf("request %d: %w", q.index, err)
			}
			r := slices.Index(eps, picked)
			if r < 0 {
				return nil, fmt.Errorf("request %d: the picker returned an endpoint that was not a candidate", q.index)
			}
			q.replica = r
			inFlight[r]++
			inFlightTk[r] += row.InputTokens
			pending++
			reps[r].add(q, now)
			if !busy[r] {
				kick(r, now)
			}
		}
	}
}

// WriteTable writes results as an aligned text table (Markdown when markdown is true).
func WriteTable(w io.Writer, results []*Result, markdown bool) error {
	head := []string{"policy", "completed", "hit ratio", "ideal", "TTFT p50 s", "TTFT p90 s", "TTFT p99 s",
		"ITL p50 ms", "ITL p99 ms", "out tok/s", "load CV", "pick µs"}
	rows := [][]string{head}
	for _, r := range results {
		rows = append(rows, []string{label(r.Policy), strconv.Itoa(r.Completed), fmt.Sprintf("%.3f", r.HitRatio),
			fmt.Sprintf("%.3f", r.IdealHitRatio), fmt.Sprintf("%.3f", r.TTFT.P50), fmt.Sprintf("%.3f", r.TTFT.P90),
			fmt.Sprintf("%.3f", r.TTFT.P99), fmt.Sprintf("%.1f", r.ITL.P50*1e3), fmt.Sprintf("%.1f", r.ITL.P99*1e3),
			fmt.Sprintf("%.0f", r.OutputTokensPerSec), fmt.Sprintf("%.3f", r.LoadSpread), fmt.Sprintf("%.1f", r.PickMicros)})
	}
	if markdown {
		for i, row := range rows {
			if _, err := fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | ")); err != nil {
				return err
			}
			if i == 0 {
				if _, err := fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(row))); err != nil {
					return err
				}
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	return tw.Flush()
}
