package sim

import (
	"slices"
	"sync"
	"time"
)

// The engine core (Engine, engine.go): a deterministic state machine in the style of the vLLM
// V1 scheduler (vllm/v1/core/sched/scheduler.py). It knows nothing of HTTP or wall time: the
// server's step loop calls Schedule, waits until the step's modelled end on the injected clock,
// then calls Complete; replay does the same in virtual time. Given the same inputs in the same
// order it produces the same outputs and timings.
//
// One step:
//  1. running requests first, in arrival order, each asking for all its not yet computed tokens
//     (1 when decoding, the rest of the prompt while prefilling), capped by the step's token
//     budget (chunked prefill); when a request's new tokens need blocks and none are free, the
//     last running request is preempted (its blocks freed, recomputed later from the waiting
//     queue's head), possibly the request itself;
//  2. then, if nothing was preempted, waiting requests in FIFO order while fewer than
//     max_num_seqs run and budget remains: a new request first takes its prefix-cache hit (full
//     blocks only, never the last prompt token, vLLM kv_cache_manager.get_computed_blocks), then
//     blocks for the rest; the queue's head blocks the ones behind it when blocks run out;
//     requests of an adapter beyond max_loras and requests whose KV is still being received
//     (P/D, kvtransfer.go) are skipped without blocking the queue;
//  3. full blocks are registered in the prefix cache as soon as they are scheduled (vLLM
//     allocate_slots -> cache_blocks), prompt and generated tokens alike;
//  4. at the step's end every request whose tokens are now all computed samples one token.

// defaultMaxNumBatchedTokens is vLLM V1's default max_num_batched_tokens for the OpenAI server
// (vllm/engine/arg_utils.py, usage context OPENAI_API_SERVER): the per-step token budget.
const defaultMaxNumBatchedTokens = 8192

type seqStatus int

const (
	statusWaiting seqStatus = iota
	statusRunning
	statusFinished
)

// Finish reasons, as vLLM's FinishReason prints them (vllm/v1/engine/__init__.py).
const (
	finishStop   = "stop"
	finishLength = "length"
	finishAbort  = "abort"
	// finishToolCalls is the API's finish_reason of an answer parsed as tool calls (the engine
	// itself finished with "stop").
	finishToolCalls = "tool_calls"
)

// sequence is one request in the engine: its prompt, its planned output, the scheduler state
// (owned by the engine) and, for the HTTP server, its progress (nil in replay).
type sequence struct {
	id  string
	ref int
	// prompt and output are the caller's slices (never written): the first numTokens() of
	// prompt followed by output are known to the engine.
	prompt, output []int
	promptLen      int
	// finishReason is what ends the planned output ("stop" when its last token is EOS).
	finishReason string

	status          seqStatus
	aborted         bool
	numOut          int
	numComputed     int
	blocks          []*block
	numCachedBlocks int // leading blocks registered in the prefix cache
	hashes          []BlockHash
	numCachedTokens int // prefix-cache hit at first scheduling; -1 before
	preemptions     int
	// lora is the LoRA adapter the request runs with ("" = base model), loraID its vLLM int id.
	lora   string
	loraID int

	// kvx are the request's kv_transfer_params (nil: none); xfer, remoteTokens and readyAt the
	// state of a decode-side transfer (kvtransfer.go).
	kvx          *KVTransferParams
	xfer         xferState
	remoteTokens int
	readyAt      time.Time

	arrival, scheduled, firstToken, lastToken time.Time

	progress *progress
}

func newSequence(id string, prompt, output []int, finishReason string, notify chan struct{}) *sequence {
	s := &sequence{id: id, prompt: prompt, output: output, promptLen: len(prompt), finishReason: finishReason,
		numCachedTokens: -1}
	if notify != nil {
		s.progress = &progress{notify: notify}
	}
	return s
}

func (s *sequence) numTokens() int  { return s.promptLen + s.numOut }
func (s *sequence) numPlanned() int { return len(s.output) }

// tokens returns the known tokens [lo, hi), in place when they lie in the prompt or in the
// output, else copied into *scratch.
func (s *sequence) tokens(lo, hi int, scratch *[]int) []int {
	switch {
	case hi <= s.promptLen:
		return s.prompt[lo:hi]
	case lo >= s.promptLen:
		return s.output[lo-s.promptLen : hi-s.promptLen]
	}
	*scratch = append(append((*scratch)[:0], s.prompt[lo:]...), s.output[:hi-s.promptLen]...)
	return *scratch
}

// progress is what the HTTP side reads of a sequence: how many output tokens exist, and how it
// ended. notify (shared by the sequences of one HTTP request) gets a non-blocking send after
// every change, so the engine never waits for a slow client.
type progress struct {
	mu        sync.Mutex
	generated int
	cached    int
	finished  bool
	reason    string
	err       error
	// kvx are the kv_transfer_params of a finished prefill-side request.
	kvx    *KVTransferParams
	notify chan struct{}
}

type progressView struct {
	generated, cached int
	finished          bool
	reason            string
	err               error
	kvx               *KVTransferParams
}

func (p *progress) view() progressView {
	p.mu.Lock()
	defer p.mu.Unlock()
	return progressView{generated: p.generated, cached: p.cached, finished: p.finished, reason: p.reason, err: p.err, kvx: p.kvx}
}

func (p *progress) publish(f func(*progress)) {
	if p == nil {
		return
	}
	p.mu.Lock()
	f(p)
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// stepStats is what one schedule+complete cycle contributes to the metrics; see metrics.go.
type stepStats struct {
	promptTokens, generationTokens int
	prefixQueries, prefixHits      int
	preemptions                    int
	ttft, itl, e2e, queue          []float64 // seconds
	finished                       []finishedStats
	stepTokens                     int
}

type finishedStats struct {
	reason                     string
	promptTokens, outputTokens int
}

func (st *stepStats) reset() {
	*st = stepStats{ttft: st.ttft[:0], itl: st.itl[:0], e2e: st.e2e[:0], queue: st.queue[:0], finished: st.finished[:0]}
}

type scheduledSeq struct {
	seq *sequence
	n   int
}

// stepPlan is one scheduled step.
type stepPlan struct {
	items                                 []scheduledSeq
	prefillTokens, decodeTokens, kvTokens int
	duration                              time.Duration
}

// add queues s; now is its arrival time.
func (e *Engine) add(s *sequence, now time.Time) {
	s.arrival = now
	s.status = statusWaiting
	if s.lora != "" {
		e.numLoRA++
	}
	e.waiting = append(e.waiting, s)
}

// abort drops s (its client went away). A waiting sequence leaves at once; a running one at
// once when no step is in flight, else at the next schedule, since it is part of the step.
func (e *Engine) abort(s *sequence) {
	switch s.status {
	case statusWaiting:
		if i := slices.Index(e.waiting, s); i >= 0 {
			e.waiting = slices.Delete(e.waiting, i, i+1)
		} else if i := slices.Index(e.future, s); i >= 0 {
			e.future = slices.Delete(e.future, i, i+1)
		}
		e.finish(s, finishAbort, nil)
	case statusRunning:
		if e.inFlight {
			s.aborted = true
			return
		}
		if i := slices.Index(e.running, s); i >= 0 {
			e.running = slices.Delete(e.running, i, i+1)
		}
		e.finish(s, finishAbort, nil)
	}
}

// failAll ends every sequence with err (the server is closing).
func (e *Engine) failAll(err error) {
	for _, s := range slices.Concat(e.waiting, e.running, e.future) {
		e.finish(s, finishAbort, err)
	}
	e.waiting, e.running, e.future = nil, nil, nil
}

func (e *Engine) idle() bool { return len(e.waiting) == 0 && len(e.running) == 0 }

func (e *Engine) blocksFor(tokens int) int { return (tokens + e.blockSize - 1) / e.blockSize }

// schedule plans the next step, or returns nil when there is nothing to run. now is the step's
// start time (queue time is measured to it).
func (e *Engine) schedule(now time.Time) *stepPlan {
	e.releaseHeld(now)
	e.running = slices.DeleteFunc(e.running, func(s *sequence) bool {
		if s.aborted {
			e.finish(s, finishAbort, nil)
			return true
		}
		return false
	})
	p := &e.plan
	clear(p.items)
	p.items = p.items[:0]
	p.prefillTokens, p.decodeTokens, p.kvTokens = 0, 0, 0
	budget := e.maxBatchedTokens
	preempted := false

	for i := 0; i < len(e.running) && budget > 0; i++ {
		s := e.running[i]
		n := min(s.numTokens()-s.numComputed, budget)
		if n <= 0 {
			continue
		}
		for {
			need := e.blocksFor(s.numComputed+n) - len(s.blocks)
			if need <= 0 || e.kv.canAllocate(need, nil) {
				if need > 0 {
					s.blocks = e.kv.allocate(need, s.blocks)
				}
				break
			}
			victim := e.running[len(e.running)-1]
			e.running = e.running[:len(e.running)-1]
			e.preempt(victim)
			preempted = true
			if victim == s {
				s = nil
				break
			}
		}
		if s == nil {
			break
		}
		e.cacheFullBlocks(s, n)
		e.addToPlan(s, n)
		budget -= n
	}

	// vLLM's scheduler skips (without blocking the queue) a waiting request whose LoRA adapter
	// is not running while max_loras adapters already are, and a request whose KV is still
	// being received.
	loras := e.loras[:0]
	if e.numLoRA > 0 {
		loras = appendLoRAs(loras, e.running)
	}
	for i := 0; !preempted && i < len(e.waiting) && len(e.running) < e.maxNumSeqs && budget > 0; {
		s := e.waiting[i]
		if s.lora != "" && !slices.Contains(loras, s.lora) && len(loras) >= e.maxLoras {
			i++
			continue
		}
		if s.xfer == xferWaiting {
			if s.readyAt.After(now) {
				i++
				continue
			}
			e.receiveKV(s)
		}
		if s.xfer != xferDone {
			ok, async := e.admit(s, now, budget)
			if !ok {
				break
			}
			if async {
				i++
				continue
			}
		}
		n := min(s.numTokens()-s.numComputed, budget)
		if need := e.blocksFor(s.numComputed+n) - len(s.blocks); need > 0 {
			if !e.kv.canAllocate(need, nil) {
				break
			}
			s.blocks = e.kv.allocate(need, s.blocks)
		}
		if s.scheduled.IsZero() {
			s.scheduled = now
			e.stats.queue = append(e.stats.queue, now.Sub(s.arrival).Seconds())
		}
		if i == 0 {
			e.waiting[0] = nil // do not keep finished sequences reachable from the backing array
			e.waiting = e.waiting[1:]
		} else {
			e.waiting = slices.Delete(e.waiting, i, i+1)
		}
		if s.lora != "" && !slices.Contains(loras, s.lora) {
			loras = append(loras, s.lora)
		}
		s.status = statusRunning
		e.running = append(e.running, s)
		e.cacheFullBlocks(s, n)
		e.addToPlan(s, n)
		budget -= n
	}
	e.loras = loras[:0]

	if len(p.items) == 0 {
		return nil
	}
	p.duration = e.timing.StepTime(p.prefillTokens, p.decodeTokens, p.kvTokens)
	e.stats.stepTokens = p.prefillTokens + p.decodeTokens
	return p
}

// admit gives a waiting sequence (new or preempted) its prefix-cache hit and the blocks of its
// prompt: false when blocks are short (the queue's head then blocks the rest). async is true
// for a decode-side request whose external tokens are now in transfer.
func (e *Engine) admit(s *sequence, now time.Time, budget int) (ok, async bool) {
	e.ensureHashes(s, s.numTokens()/e.blockSize)
	// vLLM: "When all tokens hit the cache, we must recompute the last token to obtain
	// logits", so at most numTokens-1 tokens, rounded down to full blocks, can hit.
	hits := e.kv.lookup(s.hashes, (s.numTokens()-1)/e.blockSize, e.hits[:0])
	e.hits = hits[:0]
	hitTokens := len(hits) * e.blockSize
	remote := s.xfer == xferNone && s.preemptions == 0 && s.kvx.remotePrefill()
	computed := hitTokens
	if remote {
		computed = s.promptLen // vLLM get_num_new_matched_tokens: the whole rest of the prompt
	}
	need := e.blocksFor(computed) - len(hits)
	if !remote {
		need = e.blocksFor(hitTokens+min(s.numTokens()-hitTokens, budget)) - len(hits)
	}
	if !e.kv.canAllocate(need, hits) {
		clear(hits)
		return false, false
	}
	e.kv.touch(hits)
	s.blocks = append(s.blocks[:0], hits...)
	clear(hits)
	s.blocks = e.kv.allocate(need, s.blocks)
	s.numCachedBlocks = len(s.blocks) - need
	s.numComputed = hitTokens
	if s.numCachedTokens < 0 {
		s.numCachedTokens = hitTokens
	}
	if s.preemptions == 0 {
		// vLLM PrefixCacheStats.record counts preempted requests apart.
		e.stats.prefixQueries += s.numTokens()
		e.stats.prefixHits += hitTokens
		e.step.PrefixQueries += s.numTokens()
		e.step.PrefixHits += hitTokens
		e.totals.PrefixQueries += int64(s.numTokens())
		e.totals.PrefixHits += int64(hitTokens)
	}
	if !remote {
		return true, false
	}
	s.remoteTokens = s.promptLen - hitTokens
	s.numComputed = s.promptLen
	e.startTransfer(s, now)
	return true, true
}

// receiveKV ends s's transfer: its blocks join the prefix cache and its last prompt token is
// recomputed (vLLM _update_waiting_for_remote_kv).
func (e *Engine) receiveKV(s *sequence) {
	s.xfer = xferDone
	s.numComputed = min(s.numComputed, s.numTokens())
	if s.numComputed == s.numTokens() {
		s.numComputed--
	}
	e.cacheFullBlocks(s, 0)
}

func (e *Engine) addToPlan(s *sequence, n int) {
	e.plan.items = append(e.plan.items, scheduledSeq{seq: s, n: n})
	if n == 1 && s.numOut > 0 {
		e.plan.decodeTokens++
	} else {
		e.plan.prefillTokens += n
	}
	e.plan.kvTokens += s.numComputed + n
}

// preempt frees s's blocks and puts it back at the head of the waiting queue, to be recomputed
// (vLLM V1 preempts by recompute).
func (e *Engine) preempt(s *sequence) {
	e.freeBlocks(s)
	s.numComputed = 0
	s.preemptions++
	s.status = statusWaiting
	s.xfer = xferNone
	e.waiting = slices.Insert(e.waiting, 0, s)
	e.stats.preemptions++
	e.step.Preemptions++
	e.totals.Preemptions++
}

func (e *Engine) freeBlocks(s *sequence) {
	slices.Reverse(s.blocks) // tail first: the ends of sequences are evicted first
	e.kv.free(s.blocks)
	clear(s.blocks)
	s.blocks = s.blocks[:0]
	s.numCachedBlocks = 0
}

// ensureHashes extends s.hashes to the first n full blocks of its known tokens: each block is
// hashed once per sequence.
func (e *Engine) ensureHashes(s *sequence, n int) {
	if len(s.hashes) >= n {
		return
	}
	if s.hashes == nil {
		s.hashes = make([]BlockHash, 0, (s.promptLen+len(s.output))/e.blockSize)
	}
	for j := len(s.hashes); j < n; j++ {
		parent := e.noneHash
		if j > 0 {
			parent = s.hashes[j-1]
		}
		// vLLM kv_cache_utils._gen_lora_extra_hash_keys: the adapter name is the extra key.
		var h BlockHash
		h, e.hashBuf = hashBlock(e.hashBuf, parent, s.tokens(j*e.blockSize, (j+1)*e.blockSize, &e.scratch), s.lora)
		s.hashes = append(s.hashes, h)
	}
}

// cacheFullBlocks registers the blocks that are full once the n newly scheduled tokens are
// computed (the last sampled token has no KV yet, so it never counts).
func (e *Engine) cacheFullBlocks(s *sequence, n int) {
	full := min(s.numComputed+n, s.numTokens()) / e.blockSize
	if full <= s.numCachedBlocks {
		return
	}
	e.ensureHashes(s, full)
	first := s.numCachedBlocks
	for j := first; j < full; j++ {
		// A newly full block comes fresh from the free queue (allocate evicts), so it is
		// never cached yet and cache always registers it.
		e.kv.cache(s.blocks[j], s.hashes[j])
	}
	if e.rec.on {
		// vLLM BlockPool.cache_full_blocks: one BlockStored for the request's new full blocks.
		var parent *BlockHash
		if first > 0 {
			parent = &s.hashes[first-1]
		}
		e.rec.stored(s.hashes[first:full], parent, s.tokens(first*e.blockSize, full*e.blockSize, &e.scratch), s.lora, s.loraID)
	}
	s.numCachedBlocks = full
}

// complete ends the planned step at time at: requests whose tokens are all computed sample
// their next token; finished requests free their blocks.
func (e *Engine) complete(p *stepPlan, at time.Time) {
	st := &e.step
	anyFinished := false
	for _, it := range p.items {
		s := it.seq
		if s.aborted || s.status != statusRunning {
			continue
		}
		s.numComputed += it.n
		if s.numComputed < s.numTokens() {
			continue // a chunk of a longer prefill: no token yet
		}
		st.Tokens = append(st.Tokens, TokenRecord{Ref: s.ref, Index: s.numOut, Token: s.output[s.numOut]})
		s.numOut++
		e.stats.generationTokens++
		e.totals.GenerationTokens++
		if s.numOut == 1 {
			e.stats.promptTokens += s.promptLen
			e.totals.PromptTokens += int64(s.promptLen)
			e.stats.ttft = append(e.stats.ttft, at.Sub(s.arrival).Seconds())
			s.firstToken = at
		} else {
			e.stats.itl = append(e.stats.itl, at.Sub(s.lastToken).Seconds())
		}
		s.lastToken = at
		if s.numOut == s.numPlanned() {
			e.stats.e2e = append(e.stats.e2e, at.Sub(s.arrival).Seconds())
			e.stats.finished = append(e.stats.finished, finishedStats{reason: s.finishReason,
				promptTokens: s.promptLen, outputTokens: s.numOut})
			rec := FinishRecord{Ref: s.ref, ID: s.id, Reason: s.finishReason, PromptTokens: s.promptLen,
				OutputTokens: s.numOut, CachedTokens: max(s.numCachedTokens, 0), RemoteTokens: s.remoteTokens,
				Preemptions: s.preemptions, Arrival: s.arrival, FirstScheduled: s.scheduled, FirstToken: s.firstToken, End: at}
			if s.kvx != nil && s.kvx.DoRemoteDecode && s.finishReason == finishLength {
				rec.KVTransfer = e.finishPrefill(s, at)
				if s.progress != nil {
					kvx := rec.KVTransfer
					s.progress.publish(func(pr *progress) { pr.kvx = kvx })
				}
			}
			st.Finished = append(st.Finished, rec)
			e.freeBlocks(s)
			e.finish(s, s.finishReason, nil)
			anyFinished = true
			continue
		}
		if s.progress != nil {
			n, cached := s.numOut, s.numCachedTokens+s.remoteTokens
			s.progress.publish(func(pr *progress) { pr.generated, pr.cached = n, cached })
		}
	}
	if anyFinished {
		e.running = slices.DeleteFunc(e.running, func(s *sequence) bool { return s.status == statusFinished })
	}
}

// finish marks s finished and tells its reader. Blocks must be freed by the caller.
func (e *Engine) finish(s *sequence, reason string, err error) {
	if s.status == statusFinished {
		return
	}
	if len(s.blocks) > 0 {
		e.freeBlocks(s)
	}
	s.status = statusFinished
	if s.lora != "" {
		e.numLoRA--
	}
	if e.live[s.id] == s {
		delete(e.live, s.id)
	}
	s.hashes = nil // the sequence may stay referenced by its caller: let the memory go
	n, cached := s.numOut, max(s.numCachedTokens, 0)+s.remoteTokens
	s.progress.publish(func(pr *progress) {
		pr.generated, pr.cached, pr.finished, pr.reason, pr.err = n, cached, true, reason, err
	})
}
