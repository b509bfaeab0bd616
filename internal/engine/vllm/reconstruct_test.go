package vllm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/engine/vllm"
)

// The adapter, built only from vLLM's documented format, rebuilds a simulated replica's cached
// block set exactly, through real ZMQ sockets: stores, LRU evictions under a small cache,
// preemptions under concurrency, and a prefix-cache reset, in both event encodings. The
// subscriber joins late on purpose (PUB drops what it sent before), so the replay socket is
// exercised too.
func TestSubscriberReconstructsSimCacheExactly(t *testing.T) {
	for _, enc := range []string{config.KVEventsEncodingMap, config.KVEventsEncodingArray} {
		t.Run(enc, func(t *testing.T) {
			cfg := config.Default().Sim
			zero := 0.0
			cfg.TimeScale = &zero
			cfg.MaxModelLen, cfg.NumGPUBlocks, cfg.MaxNumSeqs = 512, 64, 8
			cfg.KVEventsEndpoint = "tcp://127.0.0.1:0"
			cfg.KVEventsReplayEndpoint = "tcp://127.0.0.1:0"
			cfg.KVEventsTopic = "kv@replica-0"
			cfg.KVEventsEncoding = enc
			srv, err := sim.New(cfg, "replica-0", clock.RealClock{}, nil)
			require.NoError(t, err)
			hs := httptest.NewServer(srv)
			defer hs.Close()
			defer srv.Close()

			// Published before anyone listens: only replay can bring these back.
			for i := range 3 {
				complete(t, hs.URL, prompt(100+i, 40+16*i))
			}
			reg := prometheus.NewRegistry()
			sub, err := vllm.NewSubscriber(vllm.SubscriberConfig{Replica: "replica-0", Endpoint: srv.KVEventsEndpoint(),
				ReplayEndpoint: srv.KVEventsReplayEndpoint(), Topic: cfg.KVEventsTopic}, reg, nil)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- sub.Run(ctx) }()
			defer func() {
				cancel()
				require.ErrorIs(t, <-done, context.Canceled)
			}()
			// New prompts until a message gets through the subscription, then the rest.
			for i := 0; sub.NextSeq() == 0; i++ {
				require.Less(t, i, 2000, "no KV event reached the subscriber")
				complete(t, hs.URL, prompt(5000+i, 17))
				time.Sleep(5 * time.Millisecond)
			}
			// An adapter's blocks hash apart from the base model's and carry its name.
			resp, err := http.Post(hs.URL+"/v1/load_lora_adapter", "application/json",
				bytes.NewReader([]byte(`{"lora_name":"sql-lora","lora_path":"/adapters/sql"}`)))
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.NoError(t, postModel(hs.URL, "sql-lora", prompt(1, 64)))
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 12 {
						// Shared 64-token system prefix, then a per-request tail: hits and evictions.
						p := append(prompt(1, 64), prompt(1000+g*100+i, 30+(g*7+i*13)%200)...)
						if err := post(hs.URL, p); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			waitInSync(t, srv, sub)
			require.NotZero(t, len(sub.Blocks()))

			require.True(t, srv.ResetPrefixCache())
			waitInSync(t, srv, sub)
			require.Empty(t, sub.Blocks(), "AllBlocksCleared empties the set")
			complete(t, hs.URL, prompt(7, 200))
			waitInSync(t, srv, sub)
			require.Len(t, sub.Blocks(), 12, "a 200-token prompt plus its answer fills 12 blocks of 16")
		})
	}
}

// waitInSync waits until the subscriber has applied every published batch and its set equals
// the simulator's cache. (Events are published by the simulator's step loop just after the
// change, so both are polled; the final comparison shows the difference on failure.)
func waitInSync(t *testing.T, srv *sim.Server, sub *vllm.Subscriber) {
	t.Helper()
	want := func() map[vllm.BlockHash]int {
		out := map[vllm.BlockHash]int{}
		for h, n := range srv.CachedBlockHashes() {
			out[vllm.BlockHash(h)] = n
		}
		return out
	}
	ok := assert.Eventually(t, func() bool {
		return sub.NextSeq() == srv.KVEventsPublished() && reflect.DeepEqual(want(), sub.Blocks())
	}, 20*time.Second, 5*time.Millisecond)
	if !ok {
		require.Equal(t, srv.KVEventsPublished(), sub.NextSeq(), "batches applied")
		require.Equal(t, want(), sub.Blocks())
	}
}

// prompt returns n token ids derived from seed (all in the vocabulary, all distinct per seed).
func prompt(seed, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 1000 + (seed*7919+i*31)%100000
	}
	return out
}

func complete(t *testing.T, base string, p []int) {
	t.Helper()
	require.NoError(t, post(base, p))
}

// post sends a completion of prompt p with 8 output tokens.
func post(base string, p []int) error { return postModel(base, "", p) }

// postModel is post for a model (an adapter name; "" for the base model).
func postModel(base, model string, p []int) error {
	req := map[string]any{"prompt": p, "max_tokens": 8, "ignore_eos": true}
	if model != "" {
		req["model"] = model
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := http.Post(base+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("prompt of %d tokens: status %d", len(p), resp.StatusCode)
	}
	return nil
}
