package replay

import (
	"container/list"
	"time"

	"github.com/strata-inference/strata/internal/engine/sim"
)

// engine is a virtual-time model of one vLLM replica for replay, in the shape of
// internal/engine/sim's core (whose state machine is not exported yet): a FIFO waiting queue,
// continuous batching under maxNumSeqs and a per-step token budget with chunked prefill, a paged
// KV cache of numBlocks blocks of blockSize tokens with prefix caching over full prompt blocks and
// LRU eviction of unreferenced cached blocks (tails before heads), and sim.Timing's roofline step
// time. Simplifications against sim's core: a request reserves the blocks of its whole prompt and
// output when admitted (so there is no preemption), and generated tokens are not cached.
type engine struct {
	timing               sim.Timing
	blockSize, numBlocks int
	maxNumSeqs, budget   int
	inUse                int                     // referenced blocks
	cached               map[uint64]*cachedBlock // prefix cache
	idle                 *list.List              // cached blocks with ref 0, front = evict first
	waiting, running     []*job
	busy                 bool
	stepEnd              time.Time
	plan                 []planned
	computedTokens       int // prefill + decode tokens computed, for load spread
}

type cachedBlock struct {
	key  uint64
	ref  int
	elem *list.Element // in idle when ref == 0
}

type planned struct {
	j *job
	n int // tokens computed this step
}

// job is one request inside an engine.
type job struct {
	row       *Row
	keys      []uint64 // full prompt block keys
	arrival   time.Time
	computed  int // prompt tokens computed (hits included)
	generated int
	hitTokens int
	blocks    []*cachedBlock // referenced cached blocks
	private   int            // referenced blocks outside the cache
	last      time.Time
	firstAt   time.Time
	replica   int
}

func newEngine(t sim.Timing, blockSize, numBlocks, maxNumSeqs, budget int) *engine {
	return &engine{timing: t, blockSize: blockSize, numBlocks: numBlocks, maxNumSeqs: maxNumSeqs, budget: budget,
		cached: map[uint64]*cachedBlock{}, idle: list.New()}
}

func (e *engine) usage() float64 { return float64(e.inUse) / float64(e.numBlocks) }

func (e *engine) outputTokens(j *job) int { return max(1, j.row.OutputTokens) }

// fits reports whether j can ever run on this engine.
func (e *engine) fits(r *Row) bool {
	return (r.InputTokens+max(1, r.OutputTokens)+e.blockSize-1)/e.blockSize <= e.numBlocks
}

// admit tries to start j: prefix hit on full blocks (never the last prompt token, as vLLM), then
// blocks for the rest of its prompt and output. False when blocks are short (head-of-line blocking).
func (e *engine) admit(j *job) bool {
	maxHit := (j.row.InputTokens - 1) / e.blockSize
	hits := 0
	for hits < min(maxHit, len(j.keys)) {
		if _, ok := e.cached[j.keys[hits]]; !ok {
			break
		}
		hits++
	}
	total := (j.row.InputTokens + e.outputTokens(j) + e.blockSize - 1) / e.blockSize
	need := total - hits
	idleHits := 0
	for _, k := range j.keys[:hits] {
		if e.cached[k].ref == 0 {
			idleHits++
		}
	}
	// Hit blocks that sit idle leave the evictable pool; new blocks may evict the rest of it.
	if e.inUse+idleHits+need > e.numBlocks {
		return false
	}
	for _, k := range j.keys[:hits] {
		b := e.cached[k]
		if b.ref == 0 {
			e.idle.Remove(b.elem)
			b.elem = nil
		}
		b.ref++
		j.blocks = append(j.blocks, b)
	}
	e.inUse += idleHits
	for e.inUse+need+e.idle.Len() > e.numBlocks {
		b := e.idle.Remove(e.idle.Front()).(*cachedBlock)
		delete(e.cached, b.key)
	}
	e.inUse += need
	// The new full prompt blocks join the prefix cache at once (vLLM registers blocks when
	// scheduled); a key already cached by a concurrent request stays private here.
	for _, k := range j.keys[hits:] {
		if _, dup := e.cached[k]; dup {
			j.private++
			continue
		}
		b := &cachedBlock{key: k, ref: 1}
		e.cached[k] = b
		j.blocks = append(j.blocks, b)
	}
	j.private += need - (len(j.keys) - hits)
	j.hitTokens = hits * e.blockSize
	j.computed = j.hitTokens
	return true
}

// release frees j's blocks; cached ones become evictable, tail first so heads stay longest.
func (e *engine) release(j *job) {
	for i := len(j.blocks) - 1; i >= 0; i-- {
		b := j.blocks[i]
		b.ref--
		if b.ref == 0 {
			b.elem = e.idle.PushBack(b)
			e.inUse--
		}
	}
	e.inUse -= j.private
}

// schedule plans the next step at now; false when there is nothing to do.
func (e *engine) schedule(now time.Time) bool {
	e.plan = e.plan[:0]
	budget := e.budget
	prefill, decode, kv := 0, 0, 0
	add := func(j *job) {
		if j.computed < j.row.InputTokens {
			n := min(j.row.InputTokens-j.computed, budget)
			e.plan = append(e.plan, planned{j, n})
			budget -= n
			prefill += n
			kv += j.computed + n
			return
		}
		e.plan = append(e.plan, planned{j, 1})
		budget--
		decode++
		kv += j.row.InputTokens + j.generated
	}
	for _, j := range e.running {
		if budget <= 0 {
			break
		}
		add(j)
	}
	for len(e.waiting) > 0 && len(e.running) < e.maxNumSeqs && budget > 0 {
		j := e.waiting[0]
		if !e.admit(j) {
			break
		}
		e.waiting = e.waiting[1:]
		e.running = append(e.running, j)
		add(j)
	}
	if len(e.plan) == 0 {
		e.busy = false
		return false
	}
	e.busy = true
	e.stepEnd = now.Add(e.timing.StepTime(prefill, decode, kv))
	e.computedTokens += prefill + decode
	return true
}

// complete ends the step at e.stepEnd: requests whose prompt is now computed sample a token.
// It returns the jobs that finished.
func (e *engine) complete(onToken func(j *job, at time.Time)) []*job {
	at := e.stepEnd
	var done []*job
	for _, p := range e.plan {
		j := p.j
		if j.computed < j.row.InputTokens {
			j.computed += p.n
			if j.computed < j.row.InputTokens {
				continue // chunked prefill goes on
			}
		}
		j.generated++
		onToken(j, at)
		j.last = at
		if j.generated >= e.outputTokens(j) {
			done = append(done, j)
		}
	}
	if len(done) > 0 {
		for _, j := range done {
			e.release(j)
		}
		kept := e.running[:0]
		for _, j := range e.running {
			if j.generated < e.outputTokens(j) {
				kept = append(kept, j)
			}
		}
		e.running = kept
	}
	e.busy = false
	return done
}
