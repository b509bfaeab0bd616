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
// platformBenchUsers concurrent users, in the same run (sub-benchmarks alternate with -count).
// Replicas are 4 simulated H100s, in real time (time_scale 1: the engine's cost is what it
// would be) and at time_scale 0 (engines answer at once: what is left is the layers' CPU).
//
//	go test -run '^$' -bench PlatformOverhead -benchtime 2000x -count 2 ./internal/stack/
//
// Reported per sub-benchmark: req/s, p50-ms, p99-ms (client-side latency).
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
	for _, scale := range []float64{1, 0} {
		routerURL, platformURL, benchModel := startPlatformOverStack(b, scale)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * platformBenchUsers, MaxConnsPerHost: 0}}
		const maxTokens = 16
		bodies := map[string][][]byte{}
		for _, p := range prompts {
			chat, _ := json.Marshal(map[string]any{"model": benchModel, "max_tokens": maxTokens,
				"messages": []map[string]string{{"role": "user", "content": p}}})
			resp, _ := json.Marshal(map[string]any{"model": benchModel, "max_output_tokens": maxTokens, "input": p})
			respNoStore, _ := json.Marshal(map[string]any{"model": benchModel, "max_output_tokens": maxTokens, "input": p, "store": false})
			bodies["chat"] = append(bodies["chat"], chat)
			bodies["responses"] = append(bodies["responses"], resp)
			bodies["responses-nostore"] = append(bodies["responses-nostore"], respNoStore)
		}
		for _, tc := range []struct{ name, url, kind string }{
			{"chat-direct-to-router", routerURL + "/v1/chat/completions", "chat"},
			{"responses-via-platform", platformURL + "/v1/responses", "responses"},
			{"responses-store-false", platformURL + "/v1/responses", "responses-nostore"},
		} {
			b.Run(fmt.Sprintf("timescale=%g/%s", scale, tc.name), func(b *testing.B) {
				runUsers(b, client, tc.url, bodies[tc.kind])
			})
		}
	}
}


// runUsers sends b.N requests from platformBenchUsers goroutines, each taking the next body in
// turn, and reports throughput and latency percentiles.
func runUsers(b *testing.B, client *http.Client, url string, bodies [][]byte) {
	var next atomic.Int64
	lat := make([][]time.Duration, platformBenchUsers)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for u := range platformBenchUsers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[int(i)%len(bodies)]))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer sk-bench")
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
	b.StopTimer()
	if v := failed.Load(); v != nil {
		b.Fatal(v)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
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
