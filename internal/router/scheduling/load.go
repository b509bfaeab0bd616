package scheduling

var (
	_ Scorer = (*QueueScorer)(nil)
	_ Scorer = (*KVCacheScorer)(nil)
)

// QueueScorer prefers endpoints with short queues. An endpoint's queue is the engine's waiting
// requests (vllm:num_requests_waiting, scraped) plus the router's own in-flight requests to it
// (exact at decision time), normalised across the candidates as in GIE's queue scorer:
//
//	score = (maxQueue - queue) / (maxQueue - minQueue), or 1 for all when every queue is equal.
//
// Staleness means saturation: when some candidates have fresh metrics, the stale ones score 0.
// When every candidate is stale (engines without vLLM metrics, or a scrape outage) the scorer
// still balances on the in-flight counts alone rather than filtering or scoring everyone to 0.
type QueueScorer struct{}

// Name returns "queue-scorer".
func (QueueScorer) Name() string { return "queue-scorer" }

// Score implements Scorer.
func (QueueScorer) Score(_ *Request, eps []*Endpoint, scores []float64) {
	anyFresh := false
	for _, e := range eps {
		anyFresh = anyFresh || !e.Stale
	}
	queue := func(e *Endpoint) int {
		if anyFresh {
			return e.Metrics.Waiting + e.InFlight
		}
		return e.InFlight
	}
	lo, hi, seen := 0, 0, false
	for _, e := range eps {
		if anyFresh && e.Stale {
			continue
		}
		q := queue(e)
		if !seen {
			lo, hi, seen = q, q, true
		}
		lo, hi = min(lo, q), max(hi, q)
	}
	for i, e := range eps {
		switch {
		case anyFresh && e.Stale:
			scores[i] = 0
		case hi == lo:
			scores[i] = 1
		default:
			scores[i] = float64(hi-queue(e)) / float64(hi-lo)
		}
	}
}

// KVCacheScorer prefers endpoints with free KV cache: score = 1 - vllm:kv_cache_usage_perc, and 0
// for an endpoint whose metrics are stale (treated as saturated). An engine that reports no KV
// usage scores 1, which leaves the decision to the other scorers.
type KVCacheScorer struct{}

// Name returns "kv-cache-utilization-scorer", llm-d's name for the same scorer.
func (KVCacheScorer) Name() string { return "kv-cache-utilization-scorer" }

// Score implements Scorer.
func (KVCacheScorer) Score(_ *Request, eps []*Endpoint, scores []float64) {
	for i, e := range eps {
		if e.Stale {
			scores[i] = 0
			continue
		}
		scores[i] = 1 - clamp01(e.Metrics.KVCacheUsage)
	}
}
