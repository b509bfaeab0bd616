package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// SynthOptions describes a shared-prefix workload of the kind traces lack: tenants each with
// their own system prompt, whose users ask independent questions (llm-d's benchmark of issue 4:
// 150 tenants sharing 6k-token prefixes).
type SynthOptions struct {
	// Tenants is the number of tenants (>= 1); each request picks one uniformly.
	Tenants int
	// PrefixTokens is each tenant's system prompt length, QuestionTokens the length of the part
	// unique to each request (both >= 1).
	PrefixTokens, QuestionTokens int
	// OutputTokens is every request's answer length (>= 1).
	OutputTokens int
	// Requests is the number of requests and Rate their Poisson arrival rate per second.
	Requests int
	Rate     float64
	// Seed makes the workload deterministic.
	Seed uint64
}

// Synthesize generates the workload as trace rows with Mooncake hash ids: a tenant's prefix is
// the same ids in every one of its requests (rounded up to whole 512-token blocks, so the
// question starts on a fresh block), the question fresh ids.
func Synthesize(o SynthOptions) ([]Row, error) {
	switch {
	case o.Tenants < 1 || o.PrefixTokens < 1 || o.QuestionTokens < 1 || o.OutputTokens < 1 || o.Requests < 1:
		return nil, fmt.Errorf("synthetic workload: tenants, prefix, question and output tokens and requests must be >= 1")
	case !(o.Rate > 0):
		return nil, fmt.Errorf("synthetic workload: rate must be positive, got %g", o.Rate)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5717))
	prefixBlocks := (o.PrefixTokens + MooncakeBlockTokens - 1) / MooncakeBlockTokens
	input := prefixBlocks*MooncakeBlockTokens + o.QuestionTokens
	questionBlocks := (o.QuestionTokens + MooncakeBlockTokens - 1) / MooncakeBlockTokens
	next := int64(o.Tenants * prefixBlocks) // ids below are tenants' prefix blocks
	rows := make([]Row, o.Requests)
	var t float64
	for i := range rows {
		t += rng.ExpFloat64() / o.Rate
		tenant := int64(rng.IntN(o.Tenants))
		ids := make([]int64, 0, prefixBlocks+questionBlocks)
		for b := range int64(prefixBlocks) {
			ids = append(ids, tenant*int64(prefixBlocks)+b)
		}
		for range questionBlocks {
			ids = append(ids, next)
			next++
		}
		rows[i] = Row{Arrival: time.Duration(t * float64(time.Second)), InputTokens: input, OutputTokens: o.OutputTokens, HashIDs: ids}
	}
	return rows, nil
}

// WriteMooncake writes rows as Mooncake JSONL (timestamp in ms), the format ReadTrace reads.
func WriteMooncake(w io.Writer, rows []Row) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, r := range rows {
		if err := enc.Encode(struct {
			Timestamp    int64   `json:"timestamp"`
			InputLength  int     `json:"input_length"`
			OutputLength int     `json:"output_length"`
			HashIDs      []int64 `json:"hash_ids"`
		}{r.Arrival.Milliseconds(), r.InputTokens, r.OutputTokens, r.HashIDs}); err != nil {
			return err
		}
	}
	return bw.Flush()
}
