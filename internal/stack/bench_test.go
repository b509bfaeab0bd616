package stack

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// The stack's overhead: the same non-streaming chat completion sent directly to a simulated
// replica and through platform -> gateway -> router (auth, limits, metering write to SQLite,
// scoring). Simulated time is off, so the difference is the layers' own cost.
//
//	go test -run XXX -bench Overhead -benchtime 2000x ./internal/stack
func BenchmarkOverhead(b *testing.B) {
	ts := startStack(b, nil)
	if _, err := ts.admin.CreateTenant(context.Background(), "bench", 0, 0, nil); err != nil {
		b.Fatal(err)
	}
	key, _, err := ts.admin.CreateKey(context.Background(), "bench", "")
	if err != nil {
		b.Fatal(err)
	}
	body := `{"model":"` + ts.model + `","max_tokens":16,"ignore_eos":true,"messages":[{"role":"user","content":"` +
		strings.Repeat("Tell me about prefix caching. ", 20) + `"}]}`
	for _, tc := range []struct{ name, url, key string }{
		{"direct-to-replica", ts.Replicas[0].URL, ""},
		{"through-stack", ts.base, key},
	} {
		b.Run(tc.name, func(b *testing.B) {
			client := &http.Client{Transport: newHTTPTransport()}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, tc.url+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if tc.key != "" {
					req.Header.Set("Authorization", "Bearer "+tc.key)
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
