package sim

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/strata-inference/strata/internal/config"
)

// Engine is the simulator's deterministic engine core, one vLLM V1 replica (core.go describes the
// scheduling): no goroutines, no wall time, no HTTP. The caller advances it through explicit
// virtual times: Add requests, Schedule a step at a time, Complete it at its End, read the Step's
// records. Given the same configuration and the same calls in the same order it produces the
// same records and timings. The HTTP Server runs on an Engine, advanced by its clock; strata
// replay runs many, in virtual time. An Engine is not safe for concurrent use.
//
// The API is contract C3 (docs/simulator.md, "The Engine API").
type Engine struct {
	id               string
	timing           Timing
	model            ModelProfile
	blockSize        int
	maxNumSeqs       int
	maxBatchedTokens int
	maxLoras         int
	maxModelLen      int
	seed             int64
	noneHash         BlockHash
	// scale multiplies every modelled duration (the server's time_scale); 1 in virtual time.
	scale float64

	kv  *kvCache
	rec eventRecorder

	waiting []*sequence
	running []*sequence
	// future are requests added with an arrival not reached yet, by arrival (stable): each
	// joins the waiting queue at the first Schedule at or after its arrival.
	future []*sequence
	// live are the requests added through Add, by id (the server tracks its own).
	live map[string]*sequence
	// numLoRA counts live sequences with an adapter, so LoRA bookkeeping costs nothing without.
	numLoRA int

	// P/D disaggregation (kvtransfer.go).
	xferBytesPerSec float64
	linkFree        time.Time
	held            []heldBlocks
	sideHost        string
	sidePort        int

	plan     stepPlan
	inFlight bool
	step     Step
	pending  []KVEvent // events recorded outside Schedule (a prefix-cache reset)
	stats    stepStats // the server's metrics of the last Schedule or Complete
	totals   EngineStats

	// scratch buffers, reused
	hits    []*block
	loras   []string
	scratch []int
	hashBuf []byte
}

// Request is one request given to Engine.Add.
type Request struct {
	// ID is the request id, unique among the engine's live requests (vLLM's request id).
	ID string
	// Ref is the caller's opaque handle, echoed in TokenRecord and FinishRecord.
	Ref int
	// Prompt is the prompt's token ids (at least one). The engine keeps the slice, without a
	// copy, until the request finishes and never writes it; the caller must not modify it
	// meanwhile.
	Prompt []int
	// Output is the planned output's token ids: the request finishes after len(Output) tokens.
	// When nil, OutputLen synthetic token ids are generated, deterministic from the engine's
	// seed and ID (replay, where the answer's token ids do not matter).
	Output    []int
	OutputLen int
	// FinishReason is the reason reported when the planned output ends: "stop" or "length"
	// ("" means "length").
	FinishReason string
	// LoRA is the adapter name ("" = base model) and LoRAID its vLLM int id (> 0 with a LoRA).
	// The blocks of a LoRA request hash with the adapter name as extra key, as vLLM's do.
	LoRA   string
	LoRAID int
	// Arrival is when the request arrives: queue time and TTFT are measured from it. It may lie
	// ahead (the request waits unseen until then) but should not be before the start of the
	// step in flight.
	Arrival time.Time
	// KVTransfer is vLLM's kv_transfer_params for prefill/decode disaggregation, nil for none.
	// DoRemoteDecode makes this engine the prefill side; DoRemotePrefill with RemoteBlockIDs
	// the decode side (see kvtransfer.go for the model).
	KVTransfer *KVTransferParams
}

// Step is one engine step and what it produced. The engine owns it and reuses it, slices
// included, from one Schedule to the next: copy what you keep. Every token of a step is sampled
// at End.
type Step struct {
	// Start and End bound the step on the engine's timeline (End - Start is the roofline time).
	Start, End time.Time
	// PrefillTokens and DecodeTokens are the tokens computed in the step (prompt chunks and
	// recomputation count as prefill); NumRequests the requests in its batch.
	PrefillTokens, DecodeTokens int
	NumRequests                 int
	// Tokens holds one record per sampled token, in batch order (filled by Complete).
	Tokens []TokenRecord
	// Finished holds the requests that finished at End (filled by Complete).
	Finished []FinishRecord
	// KVEvents are the prefix-cache changes since the previous step, in order (vLLM publishes
	// them when it schedules the step).
	KVEvents []KVEvent
	// PrefixQueries, PrefixHits (tokens) and Preemptions are this step's increments of the
	// counters of EngineStats.
	PrefixQueries, PrefixHits, Preemptions int
	// Stats is the engine's state after Schedule, refreshed by Complete.
	Stats EngineStats
}

// TokenRecord is one sampled output token.
type TokenRecord struct {
	// Ref is the request's Request.Ref.
	Ref int
	// Index is the token's 0-based index in the output: 0 is the first token (TTFT is
	// Step.End - Arrival).
	Index int
	// Token is the token id.
	Token int
}

// FinishRecord is one finished request.
type FinishRecord struct {
	Ref int
	ID  string
	// Reason is vLLM's finish reason: "stop" or "length".
	Reason       string
	PromptTokens int
	OutputTokens int
	// CachedTokens are the prompt tokens found in the engine's own prefix cache at its first
	// scheduling; RemoteTokens those received over the KV link (P/D decode side), else 0.
	// vLLM's usage.prompt_tokens_details.cached_tokens is their sum.
	CachedTokens int
	RemoteTokens int
	Preemptions  int
	// Arrival, FirstScheduled (first time it computed tokens), FirstToken and End.
	Arrival, FirstScheduled, FirstToken, End time.Time
	// KVTransfer is set on the prefill side (Request.KVTransfer.DoRemoteDecode) when the
	// request finished by length: the kv_transfer_params vLLM returns for the decode side.
	KVTransfer *KVTransferParams
}

// EngineStats is an engine's state: what a scrape of its /metrics reports. Counters are
// cumulative since NewEngine.
type EngineStats struct {
	// Running and Waiting are vllm:num_requests_running and vllm:num_requests_waiting (waiting
	// includes requests waiting for a KV transfer).
	Running, Waiting int
	// KVCacheUsage is vllm:kv_cache_usage_perc: the fraction in [0, 1] of usable blocks
	// referenced by requests (cached free blocks count as free).
	KVCacheUsage float64
	// NumGPUBlocks and BlockSize are cache_config_info's num_gpu_blocks (the null block
	// included, as vLLM reports it) and block_size.
	NumGPUBlocks, BlockSize int
	// MaxLoRA is vLLM's max_loras; RunningLoRAs and WaitingLoRAs the adapters of running and
	// waiting requests, sorted (vllm:lora_requests_info). The slices are reused.
	MaxLoRA                    int
	RunningLoRAs, WaitingLoRAs []string
	// PrefixQueries and PrefixHits are vllm:prefix_cache_queries and _hits, in tokens.
	PrefixQueries, PrefixHits int64
	// Preemptions is vllm:num_preemptions.
	Preemptions int64
	// PromptTokens and GenerationTokens are vllm:prompt_tokens and vllm:generation_tokens.
	PromptTokens, GenerationTokens int64
	// Steps is the number of completed steps.
	Steps int64
}

// Errors of Engine.Add.
var (
	ErrDuplicateID   = errors.New("sim: duplicate request id")
	ErrPromptTooLong = errors.New("sim: prompt too long for max_model_len")
	ErrOutputTooLong = errors.New("sim: prompt plus output exceeds max_model_len")
)

// Defaults NewEngine applies to zero fields of its config.Sim, as config.Default does.
const (
	defaultBlockSize      = 16
	defaultMaxModelLen    = 8192
	defaultMaxNumSeqs     = 256
	defaultMaxOutputToken = 256
)

// NewEngine builds the engine core of one replica from cfg, a config.Sim as config.Load gives
// it (zero fields get config's defaults): the cfg.Model and cfg.GPU profiles give the roofline
// Timing; the KV cache has cfg.NumGPUBlocks blocks (0 derives them from the GPU's memory as vLLM
// does) of cfg.BlockSize tokens; cfg.MaxNumSeqs, cfg.MaxModelLen and cfg.MaxLoras bound the
// batch; the token budget is vLLM's default max_num_batched_tokens (8192); block hashes use
// vLLM's NONE_HASH of PYTHONHASHSEED=0; cfg.KVTransferGbps, cfg.KVTransferHost and
// cfg.KVTransferPort configure P/D disaggregation. engineID names the engine in
// kv_transfer_params (remote_engine_id): use the replica's name.
//
// Errors: an unknown model or GPU profile, a negative field, or a KV cache that cannot hold one
// request of max_model_len tokens (vLLM refuses to start then).
func NewEngine(cfg config.Sim, engineID string) (*Engine, error) {
	gpu, err := LookupGPU(cfg.GPU)
	if err != nil {
		return nil, err
	}
	model, err := LookupModel(cfg.Model)
	if err != nil {
		return nil, err
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = defaultBlockSize
	}
	if cfg.MaxModelLen == 0 {
		cfg.MaxModelLen = defaultMaxModelLen
	}
	if cfg.MaxNumSeqs == 0 {
		cfg.MaxNumSeqs = defaultMaxNumSeqs
	}
	if cfg.KVTransferGbps == 0 {
		cfg.KVTransferGbps = config.DefaultKVTransferGbps
	}
	if cfg.KVTransferHost == "" {
		cfg.KVTransferHost = config.DefaultKVTransferHost
	}
	if cfg.KVTransferPort == 0 {
		cfg.KVTransferPort = config.DefaultKVTransferPort
	}
	switch {
	case cfg.BlockSize < 1:
		return nil, fmt.Errorf("sim: block_size must be positive, got %d", cfg.BlockSize)
	case cfg.MaxModelLen < 2:
		return nil, fmt.Errorf("sim: max_model_len must be at least 2, got %d", cfg.MaxModelLen)
	case cfg.MaxNumSeqs < 1:
		return nil, fmt.Errorf("sim: max_num_seqs must be positive, got %d", cfg.MaxNumSeqs)
	case cfg.MaxLoras < 0:
		return nil, fmt.Errorf("sim: max_loras must not be negative, got %d", cfg.MaxLoras)
	case cfg.NumGPUBlocks < 0:
		return nil, fmt.Errorf("sim: num_gpu_blocks must not be negative, got %d", cfg.NumGPUBlocks)
	case !(cfg.KVTransferGbps > 0):
		return nil, fmt.Errorf("sim: kv_transfer_gbps must be positive, got %g", cfg.KVTransferGbps)
	}
	util := DefaultGPUMemoryUtilization
	if cfg.GPUMemoryUtilization != nil {
		util = *cfg.GPUMemoryUtilization
	}
	if util <= 0 || util > 1 {
		return nil, fmt.Errorf("sim: gpu_memory_utilization must be in (0, 1], got %g", util)
	}
	if cfg.NumGPUBlocks == 0 {
		cfg.NumGPUBlocks = NumGPUBlocks(gpu, model, cfg.BlockSize, util)
		if cfg.NumGPUBlocks == 0 {
			return nil, fmt.Errorf("sim: %s (TP %d) does not fit in %s memory at gpu_memory_utilization %g",
				model.Name, model.TP(), gpu.Name, util)
		}
	}
	// vLLM refuses to start when the KV cache cannot hold one request of max_model_len tokens
	// (vllm/v1/core/kv_cache_utils.py check_enough_kv_cache_memory); so does the simulator, or
	// such a request would wait forever. One block is the null block.
	if need := (cfg.MaxModelLen + cfg.BlockSize - 1) / cfg.BlockSize; cfg.NumGPUBlocks-1 < need {
		return nil, fmt.Errorf("sim: num_gpu_blocks %d cannot hold one request of max_model_len %d (needs %d blocks of %d tokens plus the null block)",
			cfg.NumGPUBlocks, cfg.MaxModelLen, need, cfg.BlockSize)
	}
	e := &Engine{
		id: engineID, timing: NewTiming(gpu, model), model: model, blockSize: cfg.BlockSize,
		maxNumSeqs: cfg.MaxNumSeqs, maxBatchedTokens: defaultMaxNumBatchedTokens, maxLoras: max(1, cfg.MaxLoras),
		maxModelLen: cfg.MaxModelLen, seed: cfg.Seed, noneHash: NoneHash(DefaultHashSeed), scale: 1,
		live: map[string]*sequence{},
		// Each GPU of a TP group moves its shard of the KV over its own NIC, in parallel.
		xferBytesPerSec: cfg.KVTransferGbps * 1e9 / 8 * float64(model.TP()),
		sideHost:        cfg.KVTransferHost, sidePort: cfg.KVTransferPort,
	}
	e.kv = newKVCache(cfg.NumGPUBlocks, cfg.BlockSize)
	e.kv.rec = &e.rec
	e.rec = eventRecorder{on: true, blockSize: cfg.BlockSize, dst: &e.pending}
	e.totals.NumGPUBlocks, e.totals.BlockSize, e.totals.MaxLoRA = cfg.NumGPUBlocks, cfg.BlockSize, e.maxLoras
	return e, nil
}

// ID is the engine id given to NewEngine.
func (e *Engine) ID() string { return e.id }

// Timing is the engine's roofline step-time model.
func (e *Engine) Timing() Timing { return e.timing }

// EnableKVEvents turns KV-event recording on (the default) or off. Off, Step.KVEvents stays
// empty and the engine saves the copying of hashes and token ids.
func (e *Engine) EnableKVEvents(on bool) { e.rec.on = on }

// Add queues r at r.Arrival: it joins the waiting queue at the first Schedule at or after its
// arrival (NextWake reports the next arrival), so a whole trace may be added up front. Errors,
// with nothing queued: ErrDuplicateID; ErrPromptTooLong when
// the prompt is empty or has max_model_len tokens or more; ErrOutputTooLong when prompt plus
// output exceed max_model_len; an output length below 1.
func (e *Engine) Add(r Request) error {
	if _, dup := e.live[r.ID]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicateID, r.ID)
	}
	out := len(r.Output)
	if r.Output == nil {
		out = r.OutputLen
	}
	switch {
	case len(r.Prompt) == 0 || len(r.Prompt) >= e.maxModelLen:
		return fmt.Errorf("%w: %d prompt tokens, max_model_len %d", ErrPromptTooLong, len(r.Prompt), e.maxModelLen)
	case out < 1:
		return fmt.Errorf("sim: request %q: output length must be at least 1, got %d", r.ID, out)
	case len(r.Prompt)+out > e.maxModelLen:
		return fmt.Errorf("%w: %d prompt + %d output tokens, max_model_len %d", ErrOutputTooLong, len(r.Prompt), out, e.maxModelLen)
	}
	output := r.Output
	if output == nil {
		output = syntheticOutput(e.seed, r.ID, out)
	}
	reason := r.FinishReason
	if reason == "" {
		reason = finishLength
	}
	s := newSequence(r.ID, r.Prompt, output, reason, nil)
	s.ref, s.lora, s.loraID = r.Ref, r.LoRA, r.LoRAID
	if r.KVTransfer != nil {
		p := *r.KVTransfer
		s.kvx = &p
	}
	e.live[r.ID] = s
	s.arrival = r.Arrival
	s.status = statusWaiting
	if s.lora != "" {
		e.numLoRA++
	}
	// Insert by arrival, after equal arrivals (appending in the common in-order case).
	i := len(e.future)
	for i > 0 && e.future[i-1].arrival.After(r.Arrival) {
		i--
	}
	e.future = slices.Insert(e.future, i, s)
	return nil
}

// admitArrived moves the requests that have arrived by now from future to the waiting queue.
func (e *Engine) admitArrived(now time.Time) {
	n := 0
	for n < len(e.future) && !e.future[n].arrival.After(now) {
		e.waiting = append(e.waiting, e.future[n])
		n++
	}
	if n > 0 {
		clear(e.future[:n])
		e.future = e.future[n:]
	}
}

// Abort drops the live request id, false when there is none. No FinishRecord is produced. A
// waiting request leaves at once; a running one is dropped (its blocks freed) at once, or at
// the next Schedule while a step is in flight.
func (e *Engine) Abort(id string) bool {
	s, ok := e.live[id]
	if !ok {
		return false
	}
	e.abort(s)
	return true
}

// InFlight reports whether a step is scheduled and not completed yet.
func (e *Engine) InFlight() bool { return e.inFlight }

// StepEnd is the End of the step in flight (zero when none).
func (e *Engine) StepEnd() time.Time {
	if !e.inFlight {
		return time.Time{}
	}
	return e.step.End
}

// Idle reports whether the engine holds no request (nothing waiting, running, in a step or
// still to arrive).
func (e *Engine) Idle() bool { return !e.inFlight && e.idle() && len(e.future) == 0 }

// Schedule plans the next step, starting at now; call it only when no step is in flight. ok
// is false when nothing can run at now (the engine is idle, or what waits needs a KV transfer
// or held blocks released first: see NextWake). The returned Step (always non-nil) holds Start,
// End, the token counts, the KV events recorded since the previous step, this step's counter
// increments and Stats; it stays valid until the next Schedule.
func (e *Engine) Schedule(now time.Time) (*Step, bool) {
	if e.inFlight {
		panic("sim: Engine.Schedule with a step in flight")
	}
	st := &e.step
	st.Start, st.End = now, now
	st.PrefillTokens, st.DecodeTokens, st.NumRequests = 0, 0, 0
	st.Tokens, st.Finished = st.Tokens[:0], st.Finished[:0]
	st.PrefixQueries, st.PrefixHits, st.Preemptions = 0, 0, 0
	// The pending events (recorded since the last step) become this step's, and the events of
	// this Schedule follow them.
	st.KVEvents, e.pending = e.pending, st.KVEvents[:0]
	e.rec.reset()
	e.rec.dst = &st.KVEvents
	e.stats.reset()
	e.admitArrived(now)
	p := e.schedule(now)
	e.rec.dst = &e.pending
	if p != nil {
		dur := p.duration
		if e.scale != 1 {
			dur = time.Duration(float64(dur) * e.scale)
		}
		st.End = now.Add(dur)
		st.PrefillTokens, st.DecodeTokens, st.NumRequests = p.prefillTokens, p.decodeTokens, len(p.items)
		e.inFlight = true
	}
	e.fillStats(&st.Stats)
	return st, p != nil
}

// Complete ends the step in flight at its End and returns it: the sampled tokens (Tokens), the
// finished requests (Finished) and any further KV events are appended, Stats refreshed. It
// panics when no step is in flight.
func (e *Engine) Complete() *Step {
	if !e.inFlight {
		panic("sim: Engine.Complete without a step in flight")
	}
	st := &e.step
	e.rec.dst = &st.KVEvents
	e.complete(&e.plan, st.End)
	e.rec.dst = &e.pending
	e.inFlight = false
	e.totals.Steps++
	e.fillStats(&st.Stats)
	return st
}

// NextWake is the earliest time at which a step can be scheduled without new input, when
// Schedule found nothing to run: an added request arriving, a KV transfer completing or held
// P/D blocks being released. ok is false when nothing is pending.
func (e *Engine) NextWake() (time.Time, bool) {
	var t time.Time
	ok := false
	consider := func(at time.Time) {
		if !ok || at.Before(t) {
			t, ok = at, true
		}
	}
	for _, s := range e.waiting {
		if s.xfer == xferWaiting {
			consider(s.readyAt)
		}
	}
	for _, h := range e.held {
		consider(h.until)
	}
	if len(e.future) > 0 {
		consider(e.future[0].arrival)
	}
	return t, ok
}

// RunUntil fast-forwards from now: it schedules and completes steps back to back (each starting
// at the previous End, or at NextWake when nothing can run) while a step can start before
// until, calling fn after each Complete, and after a Schedule that ran nothing but recorded KV
// events. fn may call Add and Abort (with arrivals not before the Step's End). A step that
// starts before until and ends after it is left in flight. RunUntil returns the time the
// engine reached: the last step's End, or now.
func (e *Engine) RunUntil(now, until time.Time, fn func(*Step)) time.Time {
	t := now
	for {
		if e.inFlight {
			if e.step.End.After(until) {
				return t
			}
			st := e.Complete()
			t = st.End
			if fn != nil {
				fn(st)
			}
			continue
		}
		if !t.Before(until) {
			return t
		}
		st, ok := e.Schedule(t)
		if ok {
			continue
		}
		if len(st.KVEvents) > 0 && fn != nil {
			fn(st)
		}
		w, ok := e.NextWake()
		if !ok || !w.Before(until) {
			return t
		}
		t = w
	}
}

// ResetPrefixCache drops every cached block, as vLLM's reset_prefix_cache; false, changing
// nothing, while requests hold blocks. The AllBlocksCleared event comes with the next Step.
func (e *Engine) ResetPrefixCache() bool { return e.kv.reset() }

// Stats is the engine's state now.
func (e *Engine) Stats() EngineStats {
	var st EngineStats
	e.fillStats(&st)
	return st
}

func (e *Engine) fillStats(st *EngineStats) {
	run, wait := st.RunningLoRAs[:0], st.WaitingLoRAs[:0]
	*st = e.totals
	st.Running, st.Waiting = len(e.running), len(e.waiting)
	st.KVCacheUsage = e.kv.usage()
	st.RunningLoRAs, st.WaitingLoRAs = run, wait
	if e.numLoRA > 0 {
		st.RunningLoRAs = appendLoRAs(run, e.running)
		st.WaitingLoRAs = appendLoRAs(wait, e.waiting)
	}
}

// appendLoRAs appends the distinct adapters of seqs to dst, sorted.
func appendLoRAs(dst []string, seqs []*sequence) []string {
	for _, s := range seqs {
		if s.lora != "" && !slices.Contains(dst, s.lora) {
			dst = append(dst, s.lora)
		}
	}
	slices.Sort(dst)
	return dst
}

// syntheticOutput is n deterministic token ids for request id under seed (splitmix64 over
// FNV-1a of the id), in [1000, 101000): ordinary vocabulary ids of every supported tokenizer.
func syntheticOutput(seed int64, id string, n int) []int {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	x := h ^ uint64(seed)
	out := make([]int, n)
	for i := range out {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		out[i] = 1000 + int(z%100000)
	}
	return out
}
