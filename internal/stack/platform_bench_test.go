package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-inference/strata/internal/config"
)

// The platform's overhead: POST /v1/responses without tools (platform -> router over HTTP, as
// `strata serve --layers platform --upstream ...`) against POST /v1/chat/completions sent
// directly to the same router, with the same MT-Bench prompts and output budget, by
// platformBenchUsers concurrent users, in the same run.
// Replicas are 4 simulated H100s, in real time (time_scale 1: the engine's cost is what it
// would be) and at time_scale 0 (engines answer at once: what is left is the layers' CPU).
//
//	go test -run '^$' -bench 'PlatformOverhead/split' -benchtime 1000x -count 3 ./internal/stack/
//
// Reported per time scale, for chat-direct, responses (stored, the default) and
// responses-nostore: req/s, p50-ms (client-side latency), and the responses' req/s as % of
// chat-direct (the "-%" metrics). The three alternate in rounds of platformBenchRound
// requests. A second pair of runs ("inprocess") measures the same on the default one-process
// stack, platform -> gateway -> router in memory, against chat completions through all layers.
const platformBenchUsers = 50

func BenchmarkPlatformOverhead(b *testing.B) {
	prompts := func() []string {
		qs := loadMTBench(b)
		out := make([]string, len(qs))
		for i, q := range qs {
			out[i] = q.Turns[0]
		}
		return out
	}()
	bodiesFor := func(model string) map[string][][]byte {
		const maxTokens = 16
		bodies := map[string][][]byte{}
		for _, p := range prompts {
			chat, _ := json.Marshal(map[string]any{"model": model, "max_tokens": maxTokens,
				"messages": []map[string]string{{"role": "user", "content": p}}})
			resp, _ := json.Marshal(map[string]any{"model": model, "max_output_tokens": maxTokens, "input": p})
			respNoStore, _ := json.Marshal(map[string]any{"model": model, "max_output_tokens": maxTokens, "input": p, "store": false})
			bodies["chat"] = append(bodies["chat"], chat)
			bodies["responses"] = append(bodies["responses"], resp)
			bodies["responses-nostore"] = append(bodies["responses-nostore"], respNoStore)
		}
		return bodies
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * platformBenchUsers}}
	for _, scale := range []float64{1, 0} {
		routerURL, platformURL, model := startPlatformOverStack(b, scale)
		measure(b, fmt.Sprintf("split/timescale=%g", scale), client, "sk-bench", bodiesFor(model), []benchKind{
			{"chat-direct", routerURL + "/v1/chat/completions", "chat"},
			{"responses", platformURL + "/v1/responses", "responses"},
			{"responses-nostore", platformURL + "/v1/responses", "responses-nostore"},
		})
	}
	// The whole stack in one process (platform -> gateway -> router in memory): chat
	// completions passed through every layer against responses translated by the platform.
	for _, scale := range []float64{1, 0} {
		ts := startStack(b, func(c *config.Config) {
			c.Sim.Replicas = 4
			c.Sim.TimeScale = &scale
		})
		if _, err := ts.admin.CreateTenant(context.Background(), "bench", 0, 0, nil); err != nil { // no limits
			b.Fatal(err)
		}
		key, _, err := ts.admin.CreateKey(context.Background(), "bench", "")
		if err != nil {
			b.Fatal(err)
		}
		measure(b, fmt.Sprintf("inprocess/timescale=%g", scale), client, key, bodiesFor(ts.model), []benchKind{
			{"chat-through-stack", ts.base + "/v1/chat/completions", "chat"},
			{"responses", ts.base + "/v1/responses", "responses"},
			{"responses-nostore", ts.base + "/v1/responses", "responses-nostore"},
		})
	}
}

// benchKind is one kind of request of BenchmarkPlatformOverhead: its name, URL and bodies.
type benchKind struct{ name, url, bodies string }

// measure runs kinds in alternating rounds of platformBenchRound requests, so that they see the
// same machine (a shared CI box's load changes by the second), and reports each kind's req/s,
// p50 latency and (all but the first) req/s as % of the first.
func measure(b *testing.B, name string, client *http.Client, key string, bodies map[string][][]byte, kinds []benchKind) {
	b.Run(name, func(b *testing.B) {
		elapsed := make([]time.Duration, len(kinds))
		lats := make([][]time.Duration, len(kinds))
		for done := 0; done < b.N; done += platformBenchRound {
			n := min(platformBenchRound, b.N-done)
			for i, k := range kinds {
				d, l := runUsers(b, client, k.url, key, bodies[k.bodies], n)
				elapsed[i] += d
				lats[i] = append(lats[i], l...)
			}
		}
		b.StopTimer()
		var first float64
		for i, k := range kinds {
			rps := float64(b.N) / elapsed[i].Seconds()
			slices.Sort(lats[i])
			b.ReportMetric(rps, k.name+"-req/s")
			b.ReportMetric(float64(lats[i][len(lats[i])/2].Microseconds())/1000, k.name+"-p50-ms")
			if i == 0 {
				first = rps
			} else {
				b.ReportMetric(100*rps/first, k.name+"-%")
			}
		}
	})
}

// platformBenchRound is the requests per kind of one round of BenchmarkPlatformOverhead.
const platformBenchRound = 100

// runUsers sends n requests from platformBenchUsers goroutines, each taking the next body in
// turn, and returns the wall time and every request's latency.
func runUsers(b *testing.B, client *http.Client, url, key string, bodies [][]byte, n int) (time.Duration, []time.Duration) {
	var next atomic.Int64
	lat := make([][]time.Duration, platformBenchUsers)
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for u := range platformBenchUsers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[int(i)%len(bodies)]))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+key)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Store(fmt.Sprintf("status %d: %s", resp.StatusCode, body))
					return
				}
				lat[u] = append(lat[u], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if v := failed.Load(); v != nil {
		b.Fatal(v)
	}
	return elapsed, slices.Concat(lat...)
}

// startPlatformOverStack starts router + 4 simulated replicas (time scale scale) on one
// listener and the platform alone on another, its upstream the first; it returns both URLs and
// the served model.
func startPlatformOverStack(b *testing.B, scale float64) (routerURL, platformURL, model string) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	lowerCfg, err := config.Load("", func(c *config.Config) {
		c.DataDir = b.TempDir()
		c.Layers = []string{config.LayerRouter, config.LayerEngine}
		c.Sim.TimeScale = &scale
		c.Sim.Replicas = 4
		c.Router.ScrapeTimeout = config.Duration(10 * time.Second)
		c.Router.StaleAfter = config.Duration(time.Minute)
	})
	if err != nil {
		b.Fatal(err)
	}
	lower, err := New(context.Background(), lowerCfg, quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(lower.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	lower.Serve(ln)
	routerURL = "http://" + ln.Addr().String()
	for deadline := time.Now().Add(10 * time.Second); !lower.router.Ready(); {
		if time.Now().After(deadline) {
			b.Fatal("router not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	upperCfg, err := config.Load("", func(c *config.Config) {
		c.DataDir = b.TempDir()
		c.Layers = []string{config.LayerPlatform}
		c.Upstream = routerURL
	})
	if err != nil {
		b.Fatal(err)
	}
	upper, err := New(context.Background(), upperCfg, quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(upper.Close)
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	upper.Serve(ln2)
	return routerURL, "http://" + ln2.Addr().String(), lowerCfg.Sim.ServedModelName
}
