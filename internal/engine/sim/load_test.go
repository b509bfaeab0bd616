package sim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
)

// Real-time capacity: how many concurrent streams one simulated replica serves on the wall
// clock without falling behind it. A closed-loop load generator keeps `streams` streaming
// completions open against a real-time replica over TCP (each client sends its next request as
// soon as the previous stream ends), and reports:
//
//   - the step lag (strata_sim_step_lag_seconds): how late each step ends after its modelled end;
//   - the client-observed inter-token latency (wall time between consecutive token chunks of a
//     stream) against the modelled one (vllm:inter_token_latency_seconds of the replica).
//
// The load generator runs in the replica's process, so both share the machine's cores.

// loadReport is what runLoad measures.
type loadReport struct {
	streams, requests, tokens int
	wall                      time.Duration
	lag                       []time.Duration // one per step, sorted
	clientITL                 []time.Duration // sorted
	modelledITLMean           time.Duration
	modelledITLCount          uint64
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

func meanOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

func (r loadReport) String() string {
	return fmt.Sprintf("%d streams, %d requests, %d tokens in %s (%.0f tokens/s); step lag over %d steps: p50 %s, p99 %s, max %s; "+
		"client ITL: mean %s, p50 %s, p99 %s, max %s; modelled ITL: mean %s over %d tokens",
		r.streams, r.requests, r.tokens, r.wall.Round(time.Millisecond), float64(r.tokens)/r.wall.Seconds(), len(r.lag),
		quantile(r.lag, 0.5), quantile(r.lag, 0.99), quantile(r.lag, 1),
		meanOf(r.clientITL).Round(time.Microsecond), quantile(r.clientITL, 0.5).Round(time.Microsecond),
		quantile(r.clientITL, 0.99).Round(time.Microsecond), quantile(r.clientITL, 1).Round(time.Microsecond),
		r.modelledITLMean.Round(time.Microsecond), r.modelledITLCount)
}

// runLoad starts a real-time replica of max_num_seqs streams and keeps streams streaming
// completions of promptLen prompt tokens and outTokens output tokens (ignore_eos) open until
// each client has sent perClient requests or until deadline passes (0: no deadline).
func runLoad(t testing.TB, streams, perClient, promptLen, outTokens int, duration time.Duration) loadReport {
	cfg := testConfig()
	one := 1.0
	cfg.TimeScale = &one
	cfg.MaxNumSeqs = streams
	cfg.MaxModelLen = promptLen + outTokens + 16
	s, hs := startServer(t, cfg, clock.RealClock{}, nil)
	var lagMu sync.Mutex
	var lags []time.Duration
	record := func(d time.Duration) {
		lagMu.Lock()
		lags = append(lags, d)
		lagMu.Unlock()
	}
	s.onLag.Store(&record)

	tr := &http.Transport{MaxIdleConnsPerHost: streams, MaxConnsPerHost: 0, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stop time.Time
	if duration > 0 {
		stop = time.Now().Add(duration)
	}

	type result struct {
		requests, tokens int
		itl              []time.Duration
		err              error
	}
	results := make([]result, streams)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[c]
			prompt := make([]string, promptLen)
			for i := range prompt {
				prompt[i] = strconv.Itoa(1000 + (c*promptLen+i)%50000)
			}
			body := fmt.Sprintf(`{"model": %q, "prompt": [%s], "max_tokens": %d, "ignore_eos": true, "stream": true}`,
				testModel, strings.Join(prompt, ","), outTokens)
			for n := 0; perClient == 0 || n < perClient; n++ {
				if !stop.IsZero() && time.Now().After(stop) {
					return
				}
				got, err := streamOnce(ctx, client, hs.URL+"/v1/completions", body, &res.itl)
				if err != nil {
					res.err = err
					return
				}
				if got != outTokens {
					res.err = fmt.Errorf("client %d: %d tokens, want %d", c, got, outTokens)
					return
				}
				res.requests++
				res.tokens += got
			}
		}()
	}
	wg.Wait()
	rep := loadReport{streams: streams, wall: time.Since(start)}
	for _, r := range results {
		require.NoError(t, r.err)
		rep.requests += r.requests
		rep.tokens += r.tokens
		rep.clientITL = append(rep.clientITL, r.itl...)
	}
	s.onLag.Store(nil)
	lagMu.Lock()
	rep.lag = slices.Clone(lags)
	lagMu.Unlock()
	slices.Sort(rep.lag)
	slices.Sort(rep.clientITL)
	fams, err := s.Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() == "vllm:inter_token_latency_seconds" {
			h := f.GetMetric()[0].GetHistogram()
			rep.modelledITLCount = h.GetSampleCount()
			if h.GetSampleCount() > 0 {
				rep.modelledITLMean = time.Duration(h.GetSampleSum() / float64(h.GetSampleCount()) * float64(time.Second))
			}
		}
	}
	require.Equal(t, uint64(len(rep.lag)), stepLagCount(t, fams), "every step is measured")
	return rep
}

func stepLagCount(t testing.TB, fams []*dto.MetricFamily) uint64 {
	for _, f := range fams {
		if f.GetName() == "strata_sim_step_lag_seconds" {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("strata_sim_step_lag_seconds is not on the replica's registry")
	return 0
}

// streamOnce sends one streaming request and reads it to its end, appending the wall time
// between consecutive token chunks to itl. It returns the number of token chunks.
func streamOnce(ctx context.Context, client *http.Client, url, body string, itl *[]time.Duration) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	n := 0
	var last time.Time
	for {
		line, err := br.ReadSlice('\n')
		if err == io.EOF {
			return n, fmt.Errorf("stream ended without [DONE] after %d tokens", n)
		}
		if err != nil {
			return n, err
		}
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		if bytes.HasPrefix(line, []byte("data: [DONE]")) {
			return n, nil
		}
		now := time.Now()
		if n > 0 {
			*itl = append(*itl, now.Sub(last))
		}
		last = now
		n++
	}
}

// TestRealTimeStreamsSmall keeps the load path tested in CI: 50 concurrent streams on a
// real-time replica all complete with every token, and every step's lag is measured. It makes
// no timing assertion (the numbers are in the log).
func TestRealTimeStreamsSmall(t *testing.T) {
	rep := runLoad(t, 50, 2, 16, 8, 0)
	require.Equal(t, 100, rep.requests)
	require.Equal(t, 800, rep.tokens)
	require.NotEmpty(t, rep.lag)
	require.EqualValues(t, 100*7, rep.modelledITLCount)
	t.Log(rep)
}

// TestRealTimeCapacity is the real-time capacity measurement (docs/simulator.md): by default
// 2,000 concurrent streams for 60 s against one replica with max_num_seqs 2,000, so every
// stream decodes in every step. It runs only with STRATA_SIM_LOAD=1 (it takes the machine for
// a minute); STRATA_SIM_LOAD_STREAMS and STRATA_SIM_LOAD_SECONDS change its size:
//
//	STRATA_SIM_LOAD=1 go test ./internal/engine/sim -run TestRealTimeCapacity -v -timeout 10m
func TestRealTimeCapacity(t *testing.T) {
	if os.Getenv("STRATA_SIM_LOAD") != "1" {
		t.Skip("real-time capacity load test: set STRATA_SIM_LOAD=1 to run it (2,000 streams for 60 s)")
	}
	streams, seconds := 2000, 60
	if v, err := strconv.Atoi(os.Getenv("STRATA_SIM_LOAD_STREAMS")); err == nil && v > 0 {
		streams = v
	}
	if v, err := strconv.Atoi(os.Getenv("STRATA_SIM_LOAD_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	rep := runLoad(t, streams, 0, 32, 64, time.Duration(seconds)*time.Second)
	t.Log(rep)
	require.Positive(t, rep.tokens)
}
