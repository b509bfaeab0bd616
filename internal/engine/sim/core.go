package sim

import (
	"slices"
	"sync"
	"time"
)

// The engine core: a deterministic state machine in the style of the vLLM V1 scheduler
// (vllm/v1/core/sched/scheduler.py). It knows nothing of HTTP or wall time: the server's step
// loop calls schedule, waits the step's modelled duration on the injected clock, then calls
// complete with the step's end time. Given the same inputs in the same order it produces the
// same outputs and timings.
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
// (owned by the core, guarded by the server's mutex) and its progress (read by the HTTP side).
type sequence struct {
	id string
	// tokens is the prompt followed by the whole planned output; the first numTokens() are
	// known to the engine.
	tokens    []int
	promptLen int
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

	arrival, scheduled, lastToken time.Time

	progress *progress
}

func newSequence(id string, prompt, output []int, finishReason string, notify chan struct{}) *sequence {
	tokens := make([]int, 0, len(prompt)+len(output))
	tokens = append(append(tokens, prompt...), output...)
	return &sequence{id: id, tokens: tokens, promptLen: len(prompt), finishReason: finishReason,
		numCachedTokens: -1, progress: &progress{notify: notify}}
}

func (s *sequence) numTokens() int  { return s.promptLen + s.numOut }
func (s *sequence) numPlanned() int { return len(s.tokens) - s.promptLen }

// output returns the planned output tokens (immutable, safe to read without locks).
func (s *sequence) output() []int { return s.tokens[s.promptLen:] }

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
	notify    chan struct{}
}

type progressView struct {
	generated, cached int
	finished          bool
	reason            string
	err               error
}

func (p *progress) view() progressView {
	p.mu.Lock()
	defer p.mu.Unlock()
	return progressView{generated: p.generated, cached: p.cached, finished: p.finished, reason: p.reason, err: p.err}
}

func (p *progress) publish(f func(*progress)) {
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

type core struct {
	kv               *kvCache
	timing           Timing
	blockSize        int
	maxNumSeqs       int
	maxBatchedTokens int
	maxLoras         int
	noneHash         BlockHash

	waiting []*sequence
	running []*sequence

	plan  stepPlan
	stats stepStats
}

type coreConfig struct {
	numBlocks, blockSize, maxNumSeqs, maxBatchedTokens int
	// maxLoras is vLLM's max_loras: distinct adapters in the running set (0 means 1).
	maxLoras int
	timing   Timing
	hashSeed string
}

func newCore(c coreConfig) *core {
	return &core{kv: newKVCache(c.numBlocks, c.blockSize), timing: c.timing, blockSize: c.blockSize,
		maxNumSeqs: c.maxNumSeqs, maxBatchedTokens: c.maxBatchedTokens, maxLoras: max(1, c.maxLoras),
		noneHash: NoneHash(c.hashSeed)}
}

// add queues s; now is its arrival time.
func (c *core) add(s *sequence, now time.Time) {
	s.arrival = now
	s.status = statusWaiting
	c.waiting = append(c.waiting, s)
}

// abort drops s (its client went away). A waiting sequence leaves at once; a running one is
// dropped by the next schedule, since it may be part of the step in flight.
func (c *core) abort(s *sequence) {
	switch s.status {
	case statusWaiting:
		if i := slices.Index(c.waiting, s); i >= 0 {
			c.waiting = slices.Delete(c.waiting, i, i+1)
		}
		c.finish(s, finishAbort, nil)
	case statusRunning:
		s.aborted = true
	}
}

// failAll ends every sequence with err (the server is closing).
func (c *core) failAll(err error) {
	for _, s := range append(c.waiting, c.running...) {
		c.finish(s, finishAbort, err)
	}
	c.waiting, c.running = nil, nil
}

func (c *core) idle() bool { return len(c.waiting) == 0 && len(c.running) == 0 }

func (c *core) blocksFor(tokens int) int { return (tokens + c.blockSize - 1) / c.blockSize }

// schedule plans the next step, or returns nil when there is nothing to run. now is the step's
// start time (queue time is measured to it).
func (c *core) schedule(now time.Time) *stepPlan {
	c.running = slices.DeleteFunc(c.running, func(s *sequence) bool {
		if s.aborted {
			c.finish(s, finishAbort, nil)
			return true
		}
		return false
	})
	p := &c.plan
	p.items = p.items[:0]
	p.prefillTokens, p.decodeTokens, p.kvTokens = 0, 0, 0
	budget := c.maxBatchedTokens
	preempted := false

	for i := 0; i < len(c.running) && budget > 0; i++ {
		s := c.running[i]
		n := min(s.numTokens()-s.numComputed, budget)
		if n <= 0 {
			continue
		}
		for {
			need := c.blocksFor(s.numComputed+n) - len(s.blocks)
			if need <= 0 || c.kv.canAllocate(need, nil) {
				if need > 0 {
					s.blocks = append(s.blocks, c.kv.allocate(need)...)
				}
				break
			}
			victim := c.running[len(c.running)-1]
			c.running = c.running[:len(c.running)-1]
			c.preempt(victim)
			preempted = true
			if victim == s {
				s = nil
				break
			}
		}
		if s == nil {
			break
		}
		c.cacheFullBlocks(s, n)
		c.addToPlan(s, n)
		budget -= n
	}

	// vLLM's scheduler skips (without blocking the queue) a waiting request whose LoRA adapter
	// is not running while max_loras adapters already are.
	loras := c.runningLoras()
	for i := 0; !preempted && i < len(c.waiting) && len(c.running) < c.maxNumSeqs && budget > 0; {
		s := c.waiting[i]
		if s.lora != "" && !loras[s.lora] && len(loras) >= c.maxLoras {
			i++
			continue
		}
		c.ensureHashes(s, s.numTokens()/c.blockSize)
		// vLLM: "When all tokens hit the cache, we must recompute the last token to obtain
		// logits", so at most numTokens-1 tokens, rounded down to full blocks, can hit.
		hits := c.kv.lookup(s.hashes, (s.numTokens()-1)/c.blockSize)
		hitTokens := len(hits) * c.blockSize
		n := min(s.numTokens()-hitTokens, budget)
		need := c.blocksFor(hitTokens+n) - len(hits)
		if !c.kv.canAllocate(need, hits) {
			break
		}
		c.kv.touch(hits)
		s.blocks = append(append(s.blocks[:0], hits...), c.kv.allocate(need)...)
		s.numCachedBlocks = len(hits)
		s.numComputed = hitTokens
		if s.numCachedTokens < 0 {
			s.numCachedTokens = hitTokens
			s.scheduled = now
			c.stats.queue = append(c.stats.queue, now.Sub(s.arrival).Seconds())
		}
		if s.preemptions == 0 {
			// vLLM PrefixCacheStats.record counts preempted requests apart.
			c.stats.prefixQueries += s.numTokens()
			c.stats.prefixHits += hitTokens
		}
		if i == 0 {
			c.waiting[0] = nil // do not keep finished sequences reachable from the backing array
			c.waiting = c.waiting[1:]
		} else {
			c.waiting = slices.Delete(c.waiting, i, i+1)
		}
		if s.lora != "" {
			loras[s.lora] = true
		}
		s.status = statusRunning
		c.running = append(c.running, s)
		c.cacheFullBlocks(s, n)
		c.addToPlan(s, n)
		budget -= n
	}

	if len(p.items) == 0 {
		return nil
	}
	p.duration = c.timing.StepTime(p.prefillTokens, p.decodeTokens, p.kvTokens)
	c.stats.stepTokens = p.prefillTokens + p.decodeTokens
	return p
}

// runningLoras is the set of adapters of the running requests.
func (c *core) runningLoras() map[string]bool {
	m := map[string]bool{}
	for _, s := range c.running {
		if s.lora != "" {
			m[s.lora] = true
		}
	}
	return m
}

func (c *core) addToPlan(s *sequence, n int) {
	c.plan.items = append(c.plan.items, scheduledSeq{seq: s, n: n})
	if n == 1 && s.numOut > 0 {
		c.plan.decodeTokens++
	} else {
		c.plan.prefillTokens += n
	}
	c.plan.kvTokens += s.numComputed + n
}

// preempt frees s's blocks and puts it back at the head of the waiting queue, to be recomputed
// (vLLM V1 preempts by recompute).
func (c *core) preempt(s *sequence) {
	c.freeBlocks(s)
	s.numComputed = 0
	s.preemptions++
	s.status = statusWaiting
	c.waiting = slices.Insert(c.waiting, 0, s)
	c.stats.preemptions++
}

func (c *core) freeBlocks(s *sequence) {
	slices.Reverse(s.blocks) // tail first: the ends of sequences are evicted first
	c.kv.free(s.blocks)
	s.blocks = s.blocks[:0]
	s.numCachedBlocks = 0
}

// ensureHashes extends s.hashes to the first n full blocks of its known tokens.
func (c *core) ensureHashes(s *sequence, n int) {
	for j := len(s.hashes); j < n; j++ {
		parent := c.noneHash
		if j > 0 {
			parent = s.hashes[j-1]
		}
		var extra []any
		if s.lora != "" {
			extra = []any{s.lora} // vLLM kv_cache_utils._gen_lora_extra_hash_keys
		}
		s.hashes = append(s.hashes, HashBlockTokens(parent, s.tokens[j*c.blockSize:(j+1)*c.blockSize], extra))
	}
}

// cacheFullBlocks registers the blocks that are full once the n newly scheduled tokens are
// computed (the last sampled token has no KV yet, so it never counts).
func (c *core) cacheFullBlocks(s *sequence, n int) {
	full := min(s.numComputed+n, s.numTokens()) / c.blockSize
	if full <= s.numCachedBlocks {
		return
	}
	c.ensureHashes(s, full)
	first := s.numCachedBlocks
	for j := first; j < full; j++ {
		// A newly full block comes fresh from the free queue (allocate evicts), so it is
		// never cached yet and cache always registers it.
		c.kv.cache(s.blocks[j], s.hashes[j])
	}
	if c.kv.events != nil && full > first {
		// vLLM BlockPool.cache_full_blocks: one BlockStored for the request's new full blocks.
		e := kvEvent{kind: kvBlockStored, hashes: s.hashes[first:full:full], lora: s.lora, loraID: s.loraID,
			tokens: s.tokens[first*c.blockSize : full*c.blockSize : full*c.blockSize]}
		if first > 0 {
			e.parent, e.hasParent = s.hashes[first-1], true
		}
		c.kv.events.add(e)
	}
	s.numCachedBlocks = full
}

// complete ends the planned step at time at: requests whose tokens are all computed sample
// their next token; finished requests free their blocks.
func (c *core) complete(p *stepPlan, at time.Time) {
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
		s.numOut++
		c.stats.generationTokens++
		if s.numOut == 1 {
			c.stats.promptTokens += s.promptLen
			c.stats.ttft = append(c.stats.ttft, at.Sub(s.arrival).Seconds())
		} else {
			c.stats.itl = append(c.stats.itl, at.Sub(s.lastToken).Seconds())
		}
		s.lastToken = at
		if s.numOut == s.numPlanned() {
			c.stats.e2e = append(c.stats.e2e, at.Sub(s.arrival).Seconds())
			c.stats.finished = append(c.stats.finished, finishedStats{reason: s.finishReason,
				promptTokens: s.promptLen, outputTokens: s.numOut})
			c.freeBlocks(s)
			c.finish(s, s.finishReason, nil)
			anyFinished = true
			continue
		}
		n, cached := s.numOut, s.numCachedTokens
		s.progress.publish(func(pr *progress) { pr.generated, pr.cached = n, cached })
	}
	if anyFinished {
		c.running = slices.DeleteFunc(c.running, func(s *sequence) bool { return s.status == statusFinished })
	}
}

// finish marks s finished and tells its reader. Blocks must be freed by the caller.
func (c *core) finish(s *sequence, reason string, err error) {
	if s.status == statusFinished {
		return
	}
	if len(s.blocks) > 0 {
		c.freeBlocks(s)
	}
	s.status = statusFinished
	n, cached := s.numOut, max(s.numCachedTokens, 0)
	s.progress.publish(func(pr *progress) {
		pr.generated, pr.cached, pr.finished, pr.reason, pr.err = n, cached, true, reason, err
	})
}
