package replay

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// SynthOptions describes a shared-prefix workload of the kind traces lack (issue 4's 150-tenant
// benchmark after llm-d's: tenants sharing 6k-token system prompts), with multi-turn
// conversations and agent loops on top.
//
// Sessions start as a Poisson process; each belongs to a tenant drawn uniformly and is either a
// conversation (Turns turns: a question of QuestionTokens, an answer of OutputTokens, the next
// turn ThinkTime later on average, its prompt the whole history plus a new question) or, with
// probability AgentFraction, an agent loop (one question then AgentSteps steps 1 s apart on
// average, each a tool result of ToolTokens after a short assistant call of AgentOutputTokens).
// Every prompt starts with the tenant's system prompt.
type SynthOptions struct {
	// Tenants is the number of tenants (>= 1).
	Tenants int
	// PrefixTokens is each tenant's system prompt length, QuestionTokens the length of each
	// user question (both >= 1).
	PrefixTokens, QuestionTokens int
	// OutputTokens is the length of a conversation's answers (>= 1).
	OutputTokens int
	// Requests is the number of requests (>= 1) and Rate their mean arrival rate per second.
	Requests int
	Rate     float64
	// Turns is the number of turns of a conversation; 0 or 1: independent questions.
	Turns int
	// ThinkTime is the mean time between two turns of a conversation (exponential). Default 20s.
	ThinkTime time.Duration
	// AgentFraction in [0,1] is the share of sessions that are agent loops, AgentSteps (default
	// 6) their tool calls, ToolTokens (default 400) each tool result's length and
	// AgentOutputTokens (default 60) each assistant tool call's length.
	AgentFraction                             float64
	AgentSteps, ToolTokens, AgentOutputTokens int
	// Seed makes the workload deterministic.
	Seed uint64
}

func (o *SynthOptions) defaults() error {
	switch {
	case o.Tenants < 1 || o.PrefixTokens < 1 || o.QuestionTokens < 1 || o.OutputTokens < 1 || o.Requests < 1:
		return fmt.Errorf("synthetic workload: tenants, prefix, question and output tokens and requests must be >= 1")
	case !(o.Rate > 0) || math.IsInf(o.Rate, 0):
		return fmt.Errorf("synthetic workload: rate must be positive, got %g", o.Rate)
	case !(o.AgentFraction >= 0 && o.AgentFraction <= 1):
		return fmt.Errorf("synthetic workload: agent fraction must be in [0, 1], got %g", o.AgentFraction)
	case o.Turns < 0 || o.ThinkTime < 0 || o.AgentSteps < 0 || o.ToolTokens < 0 || o.AgentOutputTokens < 0:
		return fmt.Errorf("synthetic workload: turns, think time and agent sizes must not be negative")
	}
	o.Turns = max(o.Turns, 1)
	if o.ThinkTime == 0 {
		o.ThinkTime = 20 * time.Second
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.AgentSteps, 6)
	def(&o.ToolTokens, 400)
	def(&o.AgentOutputTokens, 60)
	return nil
}

// Synthesize generates the workload as trace rows with Mooncake hash ids, sorted by arrival.
// A tenant's system prompt is the same ids in every one of its requests, rounded up to whole
// 512-token blocks so that what follows starts on a fresh block. A session's content (questions,
// answers, tool results) is one stream of fresh ids; each request's prompt is the stream so far
// (HashIDs) and its answer the stream's continuation (OutputHashIDs), so the next turn shares
// the previous turn's prompt and answer block for block. Session is "s<n>".
func Synthesize(o SynthOptions) ([]Row, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5717))
	prefixBlocks := (o.PrefixTokens + MooncakeBlockTokens - 1) / MooncakeBlockTokens
	prefixLen := prefixBlocks * MooncakeBlockTokens
	next := int64(o.Tenants * prefixBlocks) // ids below are tenants' prefix blocks

	// The mean requests per session sets the session rate that yields Rate requests per second.
	agentReqs := float64(1 + o.AgentSteps)
	perSession := (1-o.AgentFraction)*float64(o.Turns) + o.AgentFraction*agentReqs
	sessionRate := o.Rate / perSession

	rows := make([]Row, 0, o.Requests+max(o.Turns, o.AgentSteps+1))
	var start float64
	s := 0
	session := func() {
		s++
		start += rng.ExpFloat64() / sessionRate
		tenant := int64(rng.IntN(o.Tenants))
		prefix := make([]int64, prefixBlocks)
		for b := range prefix {
			prefix[b] = tenant*int64(prefixBlocks) + int64(b)
		}
		// stream holds the session's ids; streamLen is its length in tokens after prefixLen.
		var stream []int64
		streamLen := 0
		grow := func(tokens int) {
			for (prefixLen+tokens+MooncakeBlockTokens-1)/MooncakeBlockTokens > prefixBlocks+len(stream) {
				stream = append(stream, next)
				next++
			}
		}
		turn := func(at float64, input, output int) {
			streamLen += input
			grow(streamLen)
			inBlocks := prefixBlocks + (streamLen+MooncakeBlockTokens-1)/MooncakeBlockTokens
			grow(streamLen + output)
			ids := append(slices.Clip(prefix), stream...)
			rows = append(rows, Row{Arrival: time.Duration(at * float64(time.Second)), InputTokens: prefixLen + streamLen,
				OutputTokens: output, HashIDs: ids[:inBlocks:inBlocks], OutputHashIDs: append([]int64{}, ids[inBlocks:]...),
				Session: "s" + strconv.Itoa(s)})
			streamLen += output
		}
		at := start
		if rng.Float64() < o.AgentFraction {
			turn(at, o.QuestionTokens, o.AgentOutputTokens)
			for range o.AgentSteps {
				at += rng.ExpFloat64() // tool latency, 1 s on average
				turn(at, o.ToolTokens, o.AgentOutputTokens)
			}
			return
		}
		for k := range o.Turns {
			if k > 0 {
				at += rng.ExpFloat64() * o.ThinkTime.Seconds()
			}
			turn(at, o.QuestionTokens, o.OutputTokens)
		}
	}
	for len(rows) < o.Requests {
		session()
	}
	// Sessions that start later still have turns arriving before the last request kept: add
	// them until no new session can start before it, so the arrival rate holds to the end.
	byArrival := func(a, b Row) int { return cmp.Compare(a.Arrival, b.Arrival) }
	slices.SortStableFunc(rows, byArrival)
	for horizon := rows[o.Requests-1].Arrival.Seconds(); start < horizon; {
		session()
	}
	slices.SortStableFunc(rows, byArrival)
	return slices.Clip(rows[:o.Requests]), nil
}

// WriteMooncake writes rows as Mooncake JSONL (timestamp in ms), the format ReadTrace reads,
// with Strata's extensions output_hash_ids and session_id when a row has them.
func WriteMooncake(w io.Writer, rows []Row) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	type base struct {
		Timestamp    int64   `json:"timestamp"`
		InputLength  int     `json:"input_length"`
		OutputLength int     `json:"output_length"`
		HashIDs      []int64 `json:"hash_ids"`
	}
	for _, r := range rows {
		b := base{r.Arrival.Milliseconds(), r.InputTokens, r.OutputTokens, r.HashIDs}
		var v any = b
		if r.OutputHashIDs != nil || r.Session != "" {
			v = struct {
				base
				OutputHashIDs []int64 `json:"output_hash_ids"`
				Session       string  `json:"session_id,omitempty"`
			}{b, r.OutputHashIDs, r.Session}
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return bw.Flush()
}
