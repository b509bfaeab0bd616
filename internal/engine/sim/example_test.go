package sim_test

import (
	"fmt"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
)

// An Engine in virtual time: two requests sharing a 1,024-token prefix on one H100
// Llama-3.1-8B replica, the second arriving a second after the first and finding the prefix in
// the cache. Requests may be added ahead of their arrival.
func ExampleEngine() {
	e, err := sim.NewEngine(config.Default().Sim, "replica-0")
	if err != nil {
		panic(err)
	}
	prompt := func(tail int) []int {
		p := make([]int, 1100)
		for i := range p {
			p[i] = 1000 + i
		}
		for i := 1024; i < len(p); i++ {
			p[i] = tail + i
		}
		return p
	}
	t0 := time.Unix(0, 0)
	_ = e.Add(sim.Request{ID: "a", Ref: 1, Prompt: prompt(50000), OutputLen: 100, Arrival: t0})
	_ = e.Add(sim.Request{ID: "b", Ref: 2, Prompt: prompt(60000), OutputLen: 100, Arrival: t0.Add(time.Second)})
	e.RunUntil(t0, t0.Add(time.Hour), func(st *sim.Step) {
		for _, f := range st.Finished {
			fmt.Printf("%s: TTFT %s, cached %d of %d prompt tokens, done after %s\n", f.ID,
				f.FirstToken.Sub(f.Arrival).Round(time.Microsecond), f.CachedTokens, f.PromptTokens,
				f.End.Sub(f.Arrival).Round(time.Millisecond))
		}
	})
	// Output:
	// a: TTFT 42.057ms, cached 0 of 1100 prompt tokens, done after 693ms
	// b: TTFT 8.814ms, cached 1024 of 1100 prompt tokens, done after 660ms
}
