package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/strata-inference/strata/internal/replay"
)

func main() {
	limit := flag.Int("limit", 0, "")
	rs := flag.Float64("rate-scale", 1, "")
	reps := flag.Int("replicas", 8, "")
	pol := flag.String("policy", strings.Join(replay.Policies, ","), "")
	flag.Parse()
	f, _ := os.Open("/work/shared/data/traces/mooncake_conversation_trace.jsonl")
	rows, err := replay.ReadTrace(f, "mooncake", *limit)
	if err != nil {
		panic(err)
	}
	var res []*replay.Result
	for _, p := range strings.Split(*pol, ",") {
		t := time.Now()
		r, err := replay.Run(context.Background(), rows, p, replay.Options{Replicas: *reps, Model: "Llama-3.1-8B", GPU: "H100-SXM", RateScale: *rs, Seed: 1})
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(os.Stderr, "%s %.1fs wall, skipped %d, per replica %v\n", p, time.Since(t).Seconds(), r.Skipped, r.PerReplica)
		res = append(res, r)
	}
	replay.WriteTable(os.Stdout, res, true)
}
