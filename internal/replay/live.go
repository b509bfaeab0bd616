package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router"
)

// LiveOptions configures RunLive.
type LiveOptions struct {
	// Endpoints are the base URLs (without /v1) of OpenAI-compatible engines, such as vLLM
	// servers or `strata sim` replicas (at least one).
	Endpoints []string
	// Model is the served model name to request; "" takes the first model the endpoints list.
	Model string
	// RateScale multiplies the arrival rate, as Options.RateScale. 0 means 1.
	RateScale float64
	// Transport reaches the endpoints (nil: http.DefaultTransport).
	Transport http.RoundTripper
	// ReadyTimeout bounds the wait for a first healthy endpoint. Default 30s.
	ReadyTimeout time.Duration
	// BlockSize is the engine block size the ideal hit ratio is counted in. Default 16.
	BlockSize int
	// Progress, if set, is called (from one goroutine at a time) with the finished requests.
	Progress func(done, total int)
	// Log receives the router's logs (nil: discarded).
	Log *slog.Logger
}

// RunLive replays rows in real time against live endpoints through Strata's real router: a
// router.Router built with epc as its scheduler (as `strata serve --layers router` builds it,
// with health checks, metric scrapes, in-flight accounting and retries) serves on a loopback
// port, and each row is sent to it at its (scaled) arrival time as a streamed
// POST /v1/completions whose prompt is the row's token ids (rows become prompts as in Run),
// with max_tokens = min_tokens = output_length and ignore_eos (vLLM's sampling extensions) so
// that the answer has the trace's length. Measures come from the stream: TTFT and ITL from the
// chunk arrival times, prompt and cached tokens from the final usage chunk
// (prompt_tokens_details.cached_tokens), the replica from x-gateway-destination-endpoint-served.
// A request that fails (non-200 answer, broken stream) is not completed and is counted in
// Result.Failed. Errors: invalid endpoints, no endpoint ready within ReadyTimeout, ctx done.
func RunLive(ctx context.Context, rows []Row, name string, epc config.EndpointPickerConfig, opt LiveOptions) (*Result, error) {
	if len(opt.Endpoints) == 0 {
		return nil, errors.New("endpoints: at least one is required")
	}
	if opt.RateScale == 0 {
		opt.RateScale = 1
	}
	if !(opt.RateScale > 0) || math.IsInf(opt.RateScale, 0) {
		return nil, fmt.Errorf("rate scale: must be positive, got %g", opt.RateScale)
	}
	if opt.ReadyTimeout <= 0 {
		opt.ReadyTimeout = 30 * time.Second
	}
	if opt.BlockSize <= 0 {
		opt.BlockSize = 16
	}
	engines := make([]config.Engine, len(opt.Endpoints))
	index := map[string]int{}
	for i, u := range opt.Endpoints {
		engines[i] = config.Engine{Name: "endpoint-" + strconv.Itoa(i), URL: strings.TrimSuffix(u, "/")}
		index[engines[i].Name] = i
	}
	cfg := config.Default().Router
	cfg.Scheduler = &epc
	rt, err := router.New(cfg, engines, opt.Transport, nil, nil, opt.Log)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("router listener: %w", err)
	}
	srv := &http.Server{Handler: rt, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); rt.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	defer func() {
		cancel()
		_ = srv.Close()
		wg.Wait()
	}()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	defer client.CloseIdleConnections()

	if err := waitReady(ctx, rt, opt.ReadyTimeout); err != nil {
		return nil, err
	}
	model := opt.Model
	if model == "" {
		if model, err = firstModel(ctx, client, base); err != nil {
			return nil, err
		}
	}

	col := newCollector(name, len(opt.Endpoints))
	ideal := newIdealCache(opt.BlockSize)
	var mu sync.Mutex // guards col and done
	done := 0
	var reqs sync.WaitGroup
	start := time.Now()
	for i := range rows {
		r := &rows[i]
		at := start.Add(time.Duration(float64(r.Arrival) / opt.RateScale))
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				reqs.Wait()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		mu.Lock()
		col.arrived(time.Now(), ideal.hit(r))
		mu.Unlock()
		reqs.Add(1)
		go func() {
			defer reqs.Done()
			out, err := sendLive(ctx, client, base, model, r, i)
			mu.Lock()
			defer mu.Unlock()
			done++
			if err != nil {
				col.res.Failed++
				if opt.Log != nil {
					opt.Log.Warn("replay request failed", "row", i, "err", err)
				}
			} else if rep, ok := index[out.endpoint]; ok {
				for k, t := range out.tokens {
					prev := time.Time{}
					if k > 0 {
						prev = out.tokens[k-1]
					}
					col.token(out.sent, prev, t)
				}
				col.finished(rep, out.end, out.prompt, out.cached, out.output)
			} else {
				col.res.Failed++
			}
			if opt.Progress != nil {
				opt.Progress(done, len(rows))
			}
		}()
	}
	reqs.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return col.result(), nil
}

// waitReady polls rt.Ready until an endpoint is healthy and knows its models.
func waitReady(ctx context.Context, rt *router.Router, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !rt.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("endpoints: none healthy with known models after %s", timeout)
		case <-tick.C:
		}
	}
	return nil
}

// firstModel returns the first model of the router's GET /v1/models.
func firstModel(ctx context.Context, client *http.Client, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+openai.PathModels, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("list models: %w", err)
	}
	defer resp.Body.Close()
	var list openai.ModelList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Data) == 0 {
		return "", fmt.Errorf("list models: no model listed (status %d)", resp.StatusCode)
	}
	return list.Data[0].ID, nil
}

// liveOutcome is what one streamed request measured.
type liveOutcome struct {
	endpoint               string
	sent, end              time.Time
	tokens                 []time.Time // arrival of each chunk carrying text
	prompt, cached, output int
}

// completionRequest is the body RunLive sends: vLLM's CompletionRequest with its sampling
// extensions min_tokens and ignore_eos (vllm/entrypoints/openai/protocol.py).
type completionRequest struct {
	Model         string               `json:"model"`
	Prompt        []int                `json:"prompt"`
	MaxTokens     int                  `json:"max_tokens"`
	MinTokens     int                  `json:"min_tokens"`
	IgnoreEOS     bool                 `json:"ignore_eos"`
	Stream        bool                 `json:"stream"`
	StreamOptions openai.StreamOptions `json:"stream_options"`
}

// sendLive sends row r (index i) and reads its stream to the end.
func sendLive(ctx context.Context, client *http.Client, base, model string, r *Row, i int) (*liveOutcome, error) {
	out := max(1, r.OutputTokens)
	body, err := json.Marshal(completionRequest{Model: model, Prompt: requestTokens(r, i)[:r.InputTokens],
		MaxTokens: out, MinTokens: out, IgnoreEOS: true, Stream: true,
		StreamOptions: openai.StreamOptions{IncludeUsage: true}})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+openai.PathCompletions, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.Session != "" {
		req.Header.Set(openai.HeaderSession, r.Session)
	}
	o := &liveOutcome{sent: time.Now()}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	o.endpoint, _, _ = strings.Cut(resp.Header.Get(openai.HeaderEndpointServed), ";")
	sse := openai.NewSSEReader(resp.Body)
	var usage *openai.Usage
	for {
		ev, err := sse.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		if ev.IsDone() {
			break
		}
		now := time.Now()
		var chunk openai.Completion
		if err := json.Unmarshal(ev.Data, &chunk); err != nil {
			return nil, fmt.Errorf("stream chunk: %w", err)
		}
		if len(chunk.Choices) > 0 && chunk.Choices[0].Text != "" {
			o.tokens = append(o.tokens, now)
		}
		if chunk.Usage != nil {
			usage = chunk.Usage
		}
	}
	o.end = time.Now()
	if usage == nil {
		return nil, errors.New("stream: no usage chunk")
	}
	if len(o.tokens) == 0 {
		o.tokens = append(o.tokens, o.end) // an answer of empty texts: its first token is its end
	}
	o.prompt, o.cached, o.output = usage.PromptTokens, usage.CachedTokens(), usage.CompletionTokens
	return o, nil
}
