package replay

import (
	"strconv"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// replayMaxModelLen is the context length of the simulated replicas: Llama-3.1's 128k
// (max_position_embeddings 131072), so every Mooncake prompt (up to 126k tokens) is served.
const replayMaxModelLen = 131072

// simReplica drives one sim.Engine, the simulator's deterministic core (the same one its HTTP
// server runs), in virtual time.
type simReplica struct {
	e      *sim.Engine
	st     *sim.Step // the step in flight, or the last one
	live   map[int]*request
	events []scheduling.KVEvent // converted, not yet handed to the scheduler
	maxLen int
}

var _ replica = (*simReplica)(nil)

// newReplicas builds opt.Replicas engines of one configuration: config.Default().Sim with the
// options' model, GPU and engine arguments.
// Engines record KV events only when wantEvents.
func newReplicas(opt Options, wantEvents bool) ([]replica, error) {
	cfg := config.Default().Sim
	cfg.Model, cfg.GPU = opt.Model, opt.GPU
	cfg.BlockSize, cfg.NumGPUBlocks, cfg.MaxNumSeqs = opt.BlockSize, opt.NumGPUBlocks, opt.MaxNumSeqs
	cfg.MaxModelLen = replayMaxModelLen
	if opt.NumGPUBlocks > 0 { // a small cache bounds the context: the engine must hold one request
		cfg.MaxModelLen = min(cfg.MaxModelLen, (opt.NumGPUBlocks-1)*opt.BlockSize)
	}
	out := make([]replica, opt.Replicas)
	for i := range out {
		e, err := sim.NewEngine(cfg, "replica-"+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		e.EnableKVEvents(wantEvents)
		out[i] = &simReplica{e: e, live: map[int]*request{}, maxLen: cfg.MaxModelLen}
	}
	return out, nil
}

// fits mirrors Add's length checks (vLLM's): the prompt shorter than max_model_len, prompt and
// answer within it.
func (r *simReplica) fits(prompt, output int) bool {
	return prompt < r.maxLen && prompt+output <= r.maxLen
}

func (r *simReplica) add(q *request, now time.Time) {
	in := q.row.InputTokens
	err := r.e.Add(sim.Request{ID: "r" + strconv.Itoa(q.index), Ref: q.index, Prompt: q.tokens[:in:in],
		Output: q.tokens[in:], FinishReason: "length", Arrival: now})
	if err != nil {
		// fits ruled out every error Add returns for a unique id and a non-empty prompt.
		panic("replay: sim engine refused request " + strconv.Itoa(q.index) + ": " + err.Error())
	}
	r.live[q.index] = q
}

func (r *simReplica) step(now time.Time) (time.Time, bool) {
	if r.e.InFlight() {
		return r.e.StepEnd(), true
	}
	st, ok := r.e.Schedule(now)
	if !ok {
		if st != nil {
			r.convert(st.KVEvents) // e.g. AllBlocksCleared of an idle engine
		}
		return time.Time{}, false
	}
	r.st = st
	return st.End, true
}

func (r *simReplica) complete(token func(*request, time.Time), finished func(*request, time.Time, int)) {
	st := r.e.Complete()
	for _, t := range st.Tokens {
		token(r.live[t.Ref], st.End)
	}
	for _, f := range st.Finished {
		q := r.live[f.Ref]
		delete(r.live, f.Ref)
		finished(q, st.End, f.CachedTokens)
	}
	// The events recorded at Schedule (vLLM publishes them then) and at Complete reach the
	// router together at the step's end.
	r.convert(st.KVEvents)
}

// convert appends events as scheduling.KVEvents. Their slices alias the engine's buffers, which
// stay valid until the next Schedule: the replay hands them to the scheduler before that, and
// KVEventHandler implementations keep nothing beyond the call.
func (r *simReplica) convert(events []sim.KVEvent) {
	for _, ev := range events {
		r.events = append(r.events, scheduling.KVEvent{Kind: scheduling.KVEventKind(ev.Kind), BlockHashes: ev.BlockHashes,
			ParentHash: ev.ParentHash, HasParent: ev.HasParent, TokenIDs: ev.TokenIDs, BlockSize: ev.BlockSize,
			LoRAName: ev.LoRAName, Medium: ev.Medium})
	}
}

func (r *simReplica) kvEvents(dst []scheduling.KVEvent) []scheduling.KVEvent {
	dst = append(dst, r.events...)
	clear(r.events)
	r.events = r.events[:0]
	return dst
}

func (r *simReplica) metrics() scheduling.Metrics {
	s := r.e.Stats()
	return scheduling.Metrics{Running: s.Running, Waiting: s.Waiting, KVCacheUsage: s.KVCacheUsage,
		BlockSize: s.BlockSize, NumGPUBlocks: s.NumGPUBlocks, MaxLoRA: s.MaxLoRA}
}
