package replay

import (
	"math"
	"slices"
	"time"
)

// collector gathers one policy's measures, in virtual or real time alike.
type collector struct {
	res              *Result
	ttfts, itls      []float64
	hitTok, inTok    int
	idealTok, outTok int
	first, last      time.Time
	firstSet         bool
	work             []float64 // tokens computed per replica (uncached prompt + output)
}

func newCollector(name string, replicas int) *collector {
	return &collector{res: &Result{Policy: name, PerReplica: make([]int, replicas)}, work: make([]float64, replicas)}
}

// arrived records a request's arrival (the makespan starts at the first) and its ideal hit.
func (c *collector) arrived(at time.Time, idealHit int) {
	if !c.firstSet || at.Before(c.first) {
		c.first, c.firstSet = at, true
	}
	c.idealTok += idealHit
}

// token records an output token of a request that arrived at arrival; prev is its previous
// token's time (zero for the first token).
func (c *collector) token(arrival, prev, at time.Time) {
	if prev.IsZero() {
		c.ttfts = append(c.ttfts, at.Sub(arrival).Seconds())
		return
	}
	c.itls = append(c.itls, at.Sub(prev).Seconds())
}

// finished records a completed request served by replica.
func (c *collector) finished(replica int, at time.Time, prompt, cached, output int) {
	c.res.Completed++
	c.res.PerReplica[replica]++
	c.hitTok += cached
	c.inTok += prompt
	c.outTok += output
	c.work[replica] += float64(prompt - cached + output)
	if at.After(c.last) {
		c.last = at
	}
}

// result computes the Result.
func (c *collector) result() *Result {
	res := c.res
	if c.inTok > 0 {
		res.HitRatio = float64(c.hitTok) / float64(c.inTok)
		res.IdealHitRatio = float64(c.idealTok) / float64(c.inTok)
	}
	res.TTFT = percentiles(c.ttfts)
	res.ITL = percentiles(c.itls)
	if d := c.last.Sub(c.first).Seconds(); c.firstSet && d > 0 {
		res.Duration = d
		res.OutputTokensPerSec = float64(c.outTok) / d
	}
	res.LoadSpread = cv(c.work)
	return res
}

// percentiles returns the nearest-rank p50, p90 and p99 of v (sorted in place).
func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.Sort(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99)}
}

// cv is the coefficient of variation (population standard deviation / mean) of v, 0 for an
// empty or all-zero v.
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
