package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

const durabilityKey = "sk-strata-durability-test-0123456789abcdef"

// TestUsageSurvivesSIGKILL is the ledger's durability contract end to end: the strata binary
// (platform -> gateway -> router -> one simulated replica, SQLite in a data directory) is loaded
// by concurrent clients, streaming and not, and killed with SIGKILL at a random moment, three
// times, restarting on the same data directory. Afterwards every request whose answer a client
// received completely (the whole JSON body, or a stream up to data: [DONE]) has its usage record,
// billed complete, with exactly the tokens the client was shown (the simulator's usage block).
func TestUsageSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "strata")
	build := exec.Command("go", "build", "-o", bin, "./cmd/strata")
	build.Dir = moduleRoot(t)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	dataDir := filepath.Join(dir, "data")
	cfgFile := filepath.Join(dir, "strata.yaml")
	exportFile := filepath.Join(dir, "usage.ndjson")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
sim:
  replicas: 1
  time_scale: 0.02
  max_output_tokens: 24
gateway:
  dev_rpm: 0
  dev_tpm: 0
  export:
    sink: file
    file: `+exportFile+`
    poll_interval: 50ms
`), 0o600))

	completed := map[string]openai.Usage{} // request id -> the usage the client was shown
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 3 {
		addr := freeAddr(t)
		var logs bytes.Buffer
		cmd := exec.Command(bin, "serve", "--config", cfgFile, "--data-dir", dataDir, "--listen", addr)
		cmd.Env = append(os.Environ(), DevKeyEnv+"="+durabilityKey)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		require.NoError(t, cmd.Start())
		base := "http://" + addr
		waitHealthy(t, base, cmd, &logs)

		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for c := range 8 {
			wg.Go(func() {
				client := &http.Client{Transport: &http.Transport{}}
				defer client.CloseIdleConnections()
				for n := 0; ctx.Err() == nil; n++ {
					id := fmt.Sprintf("dur-%d-%d-%d", round, c, n)
					if u, ok := durabilityRequest(ctx, client, base, id, (c+n)%3, 1+(c*7+n)%24); ok {
						mu.Lock()
						completed[id] = u
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		stop()
		wg.Wait()
		t.Logf("round %d: %d requests completed so far", round, len(completed))
	}
	require.NotEmpty(t, completed)

	st, err := store.Open(context.Background(), config.Store{Driver: "sqlite", DSN: filepath.Join(dataDir, "strata.db")})
	require.NoError(t, err)
	defer st.Close()
	recs, err := st.ListUsage(context.Background(), store.UsageFilter{})
	require.NoError(t, err)
	byID := make(map[string]store.UsageRecord, len(recs))
	for _, r := range recs {
		require.NotEmpty(t, r.TenantID, "no half-written record")
		require.Contains(t, []string{store.BilledComplete, store.BilledClientDisconnect, store.BilledUpstreamError}, r.BilledReason)
		byID[r.RequestID] = r
	}
	for id, u := range completed {
		r, ok := byID[id]
		require.True(t, ok, "request %s was answered completely but has no usage record", id)
		require.Equal(t, store.BilledComplete, r.BilledReason, id)
		require.Equal(t, store.UsageEngine, r.Source, id)
		require.Equal(t, int64(u.PromptTokens), r.PromptTokens, id)
		require.Equal(t, int64(u.CompletionTokens), r.CompletionTokens, id)
		require.Equal(t, int64(u.CachedTokens()), r.CachedTokens, id)
	}
	t.Logf("%d requests answered completely, %d usage records (the rest were cut by SIGKILL)", len(completed), len(recs))

	// Every record's CloudEvent was exported (the NDJSON file) or is still in the outbox: the
	// event was committed with its record, and a kill between the file write and the outbox
	// delete only repeats an event (at least once), never loses one.
	exported := map[string]int{}
	if f, err := os.Open(exportFile); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var ev struct {
				ID   string `json:"id"`
				Data struct {
					CompletionTokens int64 `json:"completion_tokens"`
				} `json:"data"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue // a line the kill cut short; its event is still in the outbox
			}
			exported[ev.ID]++
			require.Equal(t, byID[ev.ID].CompletionTokens, ev.Data.CompletionTokens, ev.ID)
		}
		f.Close()
	}
	pending, err := st.DueUsageEvents(context.Background(), time.Now().Add(time.Hour), 1<<20)
	require.NoError(t, err)
	inOutbox := map[string]bool{}
	for _, e := range pending {
		inOutbox[e.ID] = true
	}
	for id := range byID {
		require.True(t, exported[id] > 0 || inOutbox[id], "the usage event of %s was lost", id)
	}
	t.Logf("%d events exported, %d still in the outbox", len(exported), len(pending))
}

// durabilityRequest sends one chat completion: kind 0 non-streaming, 1 streaming with
// include_usage, 2 streaming with include_usage and continuous usage. It reports the usage the
// client was shown and whether the answer arrived completely.
func durabilityRequest(ctx context.Context, client *http.Client, base, id string, kind, maxTokens int) (openai.Usage, bool) {
	body := fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":%d,"messages":[{"role":"user","content":"Request %s: tell me about KV caches."}]`, maxTokens, id)
	switch kind {
	case 1:
		body += `,"stream":true,"stream_options":{"include_usage":true}`
	case 2:
		body += `,"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}`
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+openai.PathChatCompletions, strings.NewReader(body+"}"))
	if err != nil {
		return openai.Usage{}, false
	}
	req.Header.Set("Authorization", "Bearer "+durabilityKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(openai.HeaderRequestID, id)
	resp, err := client.Do(req)
	if err != nil {
		return openai.Usage{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return openai.Usage{}, false
	}
	if kind == 0 {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return openai.Usage{}, false
		}
		u := openai.UsageOf(b)
		if u == nil {
			return openai.Usage{}, false
		}
		return *u, true
	}
	var last *openai.Usage
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return *last, last != nil
		}
		var c struct {
			Usage *openai.Usage `json:"usage"`
		}
		if json.Unmarshal([]byte(data), &c) == nil && c.Usage != nil {
			last = c.Usage
		}
	}
	return openai.Usage{}, false
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, parent, dir, "no go.mod above the test")
		dir = parent
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// waitHealthy polls /health until the stack answers 200 (its router saw the replica).
func waitHealthy(t *testing.T, base string, cmd *exec.Cmd, logs *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	t.Fatalf("the stack did not become healthy: %s", logs.String())
}

// TestStreamThroughGatewayIsEngineExact: the gateway asks the engine for usage on every chunk
// (include_usage + continuous_usage_stats) yet a client receives exactly the bytes the simulated
// vLLM replica sends for the client's own request: the same stream requested directly from the
// replica (same X-Request-Id, so the same chunk ids; prefix caches reset in between, so the same
// cached_tokens) is the ground truth.
func TestStreamThroughGatewayIsEngineExact(t *testing.T) {
	ts := startStack(t, func(c *config.Config) { c.Sim.Replicas = 1 })
	for i, opts := range []string{``, `,"stream_options":{"include_usage":true}`,
		`,"stream_options":{"include_usage":true,"continuous_usage_stats":true}`, `,"stream_options":{"continuous_usage_stats":true}`} {
		for _, path := range []string{openai.PathChatCompletions, openai.PathCompletions} {
			body := `{"model":"` + ts.model + `","max_tokens":12,"stream":true` + opts
			if path == openai.PathChatCompletions {
				body += `,"messages":[{"role":"user","content":"Describe paged attention."}]}`
			} else {
				body += `,"prompt":"Paged attention is"}`
			}
			t.Run(fmt.Sprint(path, i), func(t *testing.T) {
				for attempt := 0; ; attempt++ {
					id := fmt.Sprintf("exact-%d-%s-%d", i, strings.ReplaceAll(strings.TrimPrefix(path, "/v1/"), "/", "-"), attempt)
					direct := postStream(t, ts.Replicas[0].URL+path, "", id, body)
					for _, sm := range ts.sims {
						sm.ResetPrefixCache()
					}
					via := postStream(t, ts.base+path, devKey, id, body)
					if createdOf(direct) != createdOf(via) && attempt < 3 {
						continue // the two answers straddle a second: "created" differs, try again
					}
					require.Equal(t, string(direct), string(via))
					rec := ts.usage(t, id)
					require.Equal(t, store.UsageEngine, rec.Source)
					require.Equal(t, store.BilledComplete, rec.BilledReason)
					return
				}
			})
		}
	}
}

// TestClientDisconnectBilledAndCancelled: a client that leaves mid-stream is billed the tokens
// generated so far (the engine's continuous usage), and the request is cancelled below the
// gateway: the replica stops running it.
func TestClientDisconnectBilledAndCancelled(t *testing.T) {
	ts := startStack(t, func(c *config.Config) {
		c.Sim.Replicas = 1
		scale := 0.2
		c.Sim.TimeScale = &scale
	})
	body := `{"model":"` + ts.model + `","max_tokens":2000,"ignore_eos":true,"stream":true,"messages":[{"role":"user","content":"Write a long story."}]}`
	req, err := http.NewRequest(http.MethodPost, ts.base+openai.PathChatCompletions, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+devKey)
	req.Header.Set(openai.HeaderRequestID, "gone-1")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	seen := 0
	for seen < 5 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			require.NotContains(t, sc.Text(), `"usage"`, "usage the client did not ask for is stripped")
			seen++
		}
	}
	require.NoError(t, resp.Body.Close())

	var rec *store.UsageRecord
	require.Eventually(t, func() bool {
		recs, err := ts.admin.Usage(context.Background(), "", 10)
		if err != nil || len(recs) == 0 {
			return false
		}
		rec = &recs[0]
		return true
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "gone-1", rec.RequestID)
	require.Equal(t, store.BilledClientDisconnect, rec.BilledReason)
	require.Equal(t, store.UsageEngine, rec.Source, "exact tokens from the engine, not an estimate")
	require.GreaterOrEqual(t, rec.CompletionTokens, int64(seen-1), "at least the tokens the client received (role chunk first)")
	require.Less(t, rec.CompletionTokens, int64(2000))
	require.Eventually(t, func() bool { return simRunning(t, ts) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the replica stopped generating for the client that left")
}

func postStream(t *testing.T, url, key, id, body string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(openai.HeaderRequestID, id)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	return b
}

// createdOf is the "created" value of a stream's first chunk.
func createdOf(stream []byte) int64 {
	line, _, _ := bytes.Cut(stream, []byte("\n"))
	var c struct {
		Created int64 `json:"created"`
	}
	_ = json.Unmarshal(bytes.TrimPrefix(line, []byte("data: ")), &c)
	return c.Created
}

// simRunning is vllm:num_requests_running summed over the stack's replicas.
func simRunning(t *testing.T, ts *testStack) float64 {
	total := 0.0
	for _, sm := range ts.sims {
		mfs, err := sm.Registry().Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "vllm:num_requests_running" {
				for _, m := range mf.GetMetric() {
					total += m.GetGauge().GetValue()
				}
			}
		}
	}
	return total
}
