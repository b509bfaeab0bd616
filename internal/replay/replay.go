// Package replay replays a request trace through the router's real scheduler
// (internal/router/scheduling, built from an EndpointPickerConfig by internal/router/plugins)
// against simulated vLLM replicas in virtual time: an hour of traffic in seconds, so a routing
// policy's effect on prefix-cache hits, TTFT, ITL and load spread can be seen before deploying it.
//
// It is a composition package: it imports the router's scheduler and the engine simulator's
// timing model (internal/engine/sim), which layer packages may not do.
package replay

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/router/plugins"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Policies are the routing policies Run knows, by name.
var Policies = []string{"round-robin", "random", "load", "llm-d-approx", "predicted-latency", "default"}

// PolicyConfig returns the EndpointPickerConfig of a named policy:
//   - round-robin, random: the picker alone (scores ignored);
//   - load: queue-scorer 1 + kv-cache-utilization-scorer 1, max-score-picker;
//   - llm-d-approx: queue-scorer 2 + kv-cache-utilization-scorer 2 + prefix-cache-scorer 3
//     (llm-d's former default, its approximate prefix parameters blockSize 64 and
//     lruCapacityPerServer 31250);
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
	// BlockSize (tokens, default 16), NumGPUBlocks (default 24576: ~393k tokens, Llama-3-8B's KV
	// cache on an 80 GB GPU at gpu_memory_utilization 0.9), MaxNumSeqs (default 256) and
	// MaxBatchedTokens (default 8192) configure every replica as vLLM's engine arguments.
	BlockSize, NumGPUBlocks, MaxNumSeqs, MaxBatchedTokens int
	// ScrapeInterval is how often the scheduler's view of engine metrics (waiting, running, KV
	// usage) is refreshed, as the router's scrape_interval. Default 50ms. The router's own
	// in-flight counts are always exact.
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
	def(&o.NumGPUBlocks, 24576)
	def(&o.MaxNumSeqs, 256)
	def(&o.MaxBatchedTokens, 8192)
	if o.ScrapeInterval <= 0 {
		o.ScrapeInterval = 50 * time.Millisecond
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
	// Completed requests; Skipped ones could never fit one replica's KV cache.
	Completed int `json:"completed"`
	Skipped   int `json:"skipped"`
	// HitRatio is prompt tokens served from the replicas' prefix caches / prompt tokens.
	HitRatio float64 `json:"prefix_hit_ratio"`
	// IdealHitRatio is the same ratio for one infinite cache that saw every request (the upper
	// bound any routing can approach), at the same block granularity.
	IdealHitRatio float64 `json:"ideal_hit_ratio"`
	// TTFT (arrival to first token) and ITL (between consecutive tokens), seconds.
	TTFT Percentiles `json:"ttft_seconds"`
	ITL  Percentiles `json:"itl_seconds"`
	// OutputTokensPerSec is generated tokens / (last finish - first arrival), virtual time.
	OutputTokensPerSec float64 `json:"output_tokens_per_second"`
	// LoadSpread is the coefficient of variation (stddev / mean) of the tokens each replica
	// computed (prefill + decode): 0 is perfectly even.
	LoadSpread float64 `json:"load_spread_cv"`
	// PerReplica is the number of requests each replica served.
	PerReplica []int `json:"requests_per_replica"`
	// Duration is the virtual time from first arrival to last finish, seconds.
	Duration float64 `json:"virtual_seconds"`
	// PickMicros is the mean wall-clock cost of one scheduling decision, microseconds.
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

// RunConfig is Run with an explicit scheduler configuration (any EndpointPickerConfig), named
// name in the result.
func RunConfig(ctx context.Context, rows []Row, name string, epc config.EndpointPickerConfig, opt Options) (*Result, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	gpu, err := sim.LookupGPU(opt.GPU)
	if err != nil {
		return nil, err
	}
	model, err := sim.LookupModel(opt.Model)
	if err != nil {
		return nil, err
	}
	sched, err := scheduling.Build(epc, plugins.Registry(), rand.NewPCG(opt.Seed, 0x5eed))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	timing := sim.NewTiming(gpu, model)
	engines := make([]*engine, opt.Replicas)
	snaps := make([]scheduling.Endpoint, opt.Replicas)
	eps := make([]*scheduling.Endpoint, opt.Replicas)
	for i := range engines {
		engines[i] = newEngine(timing, opt.BlockSize, opt.NumGPUBlocks, opt.MaxNumSeqs, opt.MaxBatchedTokens)
		snaps[i] = scheduling.Endpoint{Name: "replica-" + strconv.Itoa(i), Models: []string{modelName}, ModelsKnown: true, Healthy: true}
	}
	byName := map[string]int{}
	for i := range snaps {
		byName[snaps[i].Name] = i
	}

	res := &Result{Policy: name, PerReplica: make([]int, opt.Replicas)}
	epoch := time.Unix(0, 0)
	var (
		ttfts, itls      []float64
		hitTok, inTok    int
		idealTok         int
		outTok           int
		lastFinish       time.Time
		pickWall         time.Duration
		picks            int
		nextScrape       = epoch
		done, next       int
		seen             = map[uint64]bool{}
		inFlight         = make([]int, opt.Replicas)
		inFlightTok      = make([]int, opt.Replicas)
		metrics          = make([]scheduling.Metrics, opt.Replicas)
		firstArrival     time.Time
		firstArrivalSeen bool
	)
	arrival := func(i int) time.Time {
		return epoch.Add(time.Duration(float64(rows[i].Arrival) / opt.RateScale))
	}
	onToken := func(j *job, at time.Time) {
		if j.generated == 1 {
			ttfts = append(ttfts, at.Sub(j.arrival).Seconds())
		} else {
			itls = append(itls, at.Sub(j.last).Seconds())
		}
	}
	scrape := func(now time.Time) {
		for i, e := range engines {
			metrics[i] = scheduling.Metrics{Running: len(e.running), Waiting: len(e.waiting), KVCacheUsage: e.usage(),
				BlockSize: opt.BlockSize, NumGPUBlocks: opt.NumGPUBlocks}
		}
		nextScrape = now.Add(opt.ScrapeInterval)
	}
	total := len(rows)
	for iter := 0; ; iter++ {
		if iter%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		// The next event: a step end, else a metrics scrape (only while work is pending), else
		// an arrival; ties in that order.
		var now time.Time
		kind, which := -1, -1
		for i, e := range engines {
			if e.busy && (kind < 0 || e.stepEnd.Before(now)) {
				now, kind, which = e.stepEnd, 0, i
			}
		}
		pending := done+res.Skipped < next
		if pending && (kind < 0 || nextScrape.Before(now)) {
			now, kind = nextScrape, 1
		}
		if next < total && (kind < 0 || arrival(next).Before(now)) {
			now, kind = arrival(next), 2
		}
		switch kind {
		case -1:
			goto finished
		case 0:
			e := engines[which]
			for _, j := range e.complete(onToken) {
				done++
				inFlight[which]--
				inFlightTok[which] -= j.row.InputTokens
				res.PerReplica[which]++
				hitTok += j.hitTokens
				inTok += j.row.InputTokens
				outTok += e.outputTokens(j)
				lastFinish = now
				if opt.Progress != nil {
					opt.Progress(done, total)
				}
			}
			e.schedule(now)
		case 1:
			scrape(now)
		case 2:
			row := &rows[next]
			next++
			if !firstArrivalSeen {
				firstArrival, firstArrivalSeen = now, true
			}
			if nextScrape.Before(now) { // scrapes pause while nothing is pending: catch up
				scrape(now)
			}
			if !engines[0].fits(row) {
				res.Skipped++
				continue
			}
			idealTok += idealHit(seen, row, opt.BlockSize)
			req := &scheduling.Request{Model: modelName, PromptParts: promptParts(row, next), PromptTokens: row.InputTokens}
			for i := range snaps {
				snaps[i].Metrics, snaps[i].InFlight, snaps[i].InFlightTokens = metrics[i], inFlight[i], inFlightTok[i]
				eps[i] = &snaps[i]
			}
			start := time.Now()
			picked, err := sched.Schedule(req, eps)
			pickWall += time.Since(start)
			picks++
			if err != nil {
				return nil, fmt.Errorf("request %d: %w", next-1, err)
			}
			r := byName[picked.Name]
			inFlight[r]++
			inFlightTok[r] += row.InputTokens
			e := engines[r]
			e.waiting = append(e.waiting, &job{row: row, keys: blockKeys(row, next, opt.BlockSize), arrival: now, replica: r})
			if !e.busy {
				e.schedule(now)
			}
		}
	}
finished:
	res.Completed = done
	if inTok > 0 {
		res.HitRatio = float64(hitTok) / float64(inTok)
		res.IdealHitRatio = float64(idealTok) / float64(inTok)
	}
	res.TTFT = percentiles(ttfts)
	res.ITL = percentiles(itls)
	if d := lastFinish.Sub(firstArrival).Seconds(); d > 0 {
		res.Duration = d
		res.OutputTokensPerSec = float64(outTok) / d
	}
	work := make([]float64, len(engines))
	for i, e := range engines {
		work[i] = float64(e.computedTokens)
	}
	res.LoadSpread = cv(work)
	if picks > 0 {
		res.PickMicros = float64(pickWall.Microseconds()) / float64(picks)
	}
	return res, nil
}

// promptParts renders a row as prompt text for the scheduler, as ../shared/data/README.md says:
// one deterministic block per Mooncake hash id (4 characters per token, so 2048 characters for a
// 512-token block, the last block cut to fit input_length). A row without hash ids gets text
// unique to the row (index i).
func promptParts(r *Row, i int) []string {
	const charsPerToken = 4
	if r.HashIDs == nil {
		return []string{blockText(-int64(i), r.InputTokens*charsPerToken)}
	}
	parts := make([]string, len(r.HashIDs))
	for k, id := range r.HashIDs {
		toks := min(MooncakeBlockTokens, r.InputTokens-k*MooncakeBlockTokens)
		parts[k] = blockText(id, toks*charsPerToken)
	}
	return parts
}

// blockText is n characters determined by id: "<id>:<k> " repeated with a running k, so that
// no two ids and no two windows of one block render the same.
func blockText(id int64, n int) string {
	var b strings.Builder
	b.Grow(n + 24)
	for k := 0; b.Len() < n; k++ {
		b.WriteString(strconv.FormatInt(id, 36))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(k))
		b.WriteByte(' ')
	}
	return b.String()[:n]
}

// blockKeys are the engine's prefix-cache keys of the row's full prompt blocks: a hash chain
// over (Mooncake id, sub-block index), so that two prompts share exactly the full engine blocks
// inside the Mooncake blocks they share. The engine model's stand-in for vLLM's block hashes.
func blockKeys(r *Row, i int, blockSize int) []uint64 {
	n := r.InputTokens / blockSize
	keys := make([]uint64, n)
	var buf [24]byte
	var h uint64
	for b := range n {
		tok := b * blockSize
		id := int64(-i) // no prefix data: unique to the row
		if r.HashIDs != nil {
			id = r.HashIDs[tok/MooncakeBlockTokens]
		}
		// A block that straddles two Mooncake blocks depends on both; with block sizes that
		// divide 512 it never does.
		binary.LittleEndian.PutUint64(buf[0:], h)
		binary.LittleEndian.PutUint64(buf[8:], uint64(id))
		binary.LittleEndian.PutUint64(buf[16:], uint64(tok%MooncakeBlockTokens))
		h = xxhash.Sum64(buf[:])
		keys[b] = h
	}
	return keys
}

// idealHit returns the prompt tokens of r one infinite cache would hold: its leading Mooncake
// blocks already seen, in whole engine blocks and never the last prompt token (as the engine
// model), then records r's blocks.
func idealHit(seen map[uint64]bool, r *Row, blockSize int) int {
	if r.HashIDs == nil {
		return 0
	}
	var h uint64
	var buf [16]byte
	matched, still := 0, true
	for k, id := range r.HashIDs {
		binary.LittleEndian.PutUint64(buf[0:], h)
		binary.LittleEndian.PutUint64(buf[8:], uint64(id))
		h = xxhash.Sum64(buf[:])
		if still && seen[h] {
			matched = min(r.InputTokens, (k+1)*MooncakeBlockTokens)
		} else {
			still = false
		}
		seen[h] = true
	}
	return min(matched, (r.InputTokens-1)/blockSize*blockSize)
}

func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	sort.Float64s(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99)}
}

func cv(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	mean := 0.0
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if mean == 0 {
		return 0
	}
	ss := 0.0
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return math.Sqrt(ss/float64(len(v))) / mean
}

// WriteTable writes results as an aligned text table (Markdown when markdown is true).
func WriteTable(w io.Writer, results []*Result, markdown bool) error {
	head := []string{"policy", "completed", "hit ratio", "ideal", "TTFT p50 s", "TTFT p90 s", "TTFT p99 s",
		"ITL p50 ms", "ITL p99 ms", "out tok/s", "load CV", "pick µs"}
	rows := [][]string{head}
	for _, r := range results {
		rows = append(rows, []string{r.Policy, strconv.Itoa(r.Completed), fmt.Sprintf("%.3f", r.HitRatio),
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
