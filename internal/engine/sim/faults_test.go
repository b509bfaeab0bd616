package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
)

const streamBody = `{"model":"` + testModel + `","messages":[{"role":"user","content":"Tell me a story."}],
	"max_tokens":10,"ignore_eos":true,"stream":true}`

func faultCount(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != "strata_engine_sim_faults_injected_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "fault" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestFaultDrawDeterministic: the faults of the n-th request depend only on the seed, the
// replica name and n.
func TestFaultDrawDeterministic(t *testing.T) {
	cfg := config.SimFaults{ErrorRate: 0.3, HangRate: 0.2, ResetRate: 0.5}
	pattern := func(seed int64, name string) string {
		f := newFaults(cfg, seed, name, time.Time{})
		var b strings.Builder
		for range 200 {
			p := f.plan()
			switch {
			case p.err == errFaultInternal:
				b.WriteByte('5')
			case p.err == errFaultUnavailable:
				b.WriteByte('3')
			case p.hang:
				b.WriteByte('h')
			case p.reset:
				b.WriteByte('r')
			default:
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	a := pattern(7, "sim-0")
	require.Equal(t, a, pattern(7, "sim-0"), "same seed and replica: same faults")
	require.NotEqual(t, a, pattern(8, "sim-0"), "another seed")
	require.NotEqual(t, a, pattern(7, "sim-1"), "another replica")
	// The rates hold roughly over 200 draws (the pattern is fixed, so this cannot flake).
	errs := strings.Count(a, "5") + strings.Count(a, "3")
	require.InDelta(t, 60, errs, 25)
	require.Positive(t, strings.Count(a, "5"))
	require.Positive(t, strings.Count(a, "3"))
	require.InDelta(t, 0.7*0.2*200, strings.Count(a, "h"), 20)
	require.InDelta(t, 0.7*0.8*0.5*200, strings.Count(a, "r"), 25)

	off := newFaults(config.SimFaults{}, 7, "sim-0", time.Time{})
	for range 100 {
		require.Equal(t, faultPlan{}, off.plan())
	}
}

// TestFaultError: a real client sees vLLM's error JSON with status 500 or 503, on every
// inference endpoint; /health and /v1/models are untouched.
func TestFaultError(t *testing.T) {
	cfg := testConfig()
	cfg.Faults.ErrorRate = 1
	reg := prometheus.NewRegistry()
	_, hs := startServer(t, cfg, clock.RealClock{}, reg)

	statuses := map[int]int{}
	for i := range 20 {
		path, body := "/v1/chat/completions", `{"model":"`+testModel+`","messages":[{"role":"user","content":"hi"}]}`
		switch i % 3 {
		case 1:
			path, body = "/v1/completions", `{"model":"`+testModel+`","prompt":"hi"}`
		case 2:
			path, body = "/v1/embeddings", `{"model":"`+testModel+`","input":"hi"}`
		}
		code, resp := postJSON(t, hs, path, body)
		statuses[code]++
		var e struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
				Code    int     `json:"code"`
			} `json:"error"`
		}
		require.NoError(t, json.Unmarshal([]byte(resp), &e), resp)
		require.Equal(t, code, e.Error.Code)
		require.NotEmpty(t, e.Error.Message)
		switch code {
		case http.StatusInternalServerError:
			require.Equal(t, "InternalServerError", e.Error.Type)
		case http.StatusServiceUnavailable:
			require.Equal(t, "ServiceUnavailableError", e.Error.Type)
		default:
			t.Fatalf("status %d: %s", code, resp)
		}
	}
	require.Len(t, statuses, 2, "both 500 and 503 occur: %v", statuses)
	require.EqualValues(t, 20, faultCount(t, reg, "error"))

	// The OpenAI SDK reports it as an API error with the status.
	_, err := newClient(hs).Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
		Model: testModel, Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")}})
	var apiErr *oai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Contains(t, []int{500, 503}, apiErr.StatusCode)

	for _, p := range []string{"/health", "/v1/models", "/metrics"} {
		resp, err := http.Get(hs.URL + p)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, p)
	}
}

// TestFaultReset: a stream chosen for reset is cut after reset_after events: the client reads
// those events, then an unexpected EOF, never data: [DONE]. Non-streaming answers pass.
func TestFaultReset(t *testing.T) {
	for _, after := range []int{0, 1, 3} {
		t.Run(map[int]string{0: "after0", 1: "after1", 3: "after3"}[after], func(t *testing.T) {
			cfg := testConfig()
			cfg.Faults.ResetRate = 1
			cfg.Faults.ResetAfter = after
			reg := prometheus.NewRegistry()
			_, hs := startServer(t, cfg, clock.RealClock{}, reg)

			resp, err := http.Post(hs.URL+"/v1/chat/completions", "application/json", strings.NewReader(streamBody))
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var events []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					events = append(events, d)
				}
			}
			require.ErrorIs(t, sc.Err(), io.ErrUnexpectedEOF, "the chunked body ends without its terminator")
			require.Len(t, events, after)
			for _, e := range events {
				require.NotEqual(t, "[DONE]", e)
			}
			require.EqualValues(t, 1, faultCount(t, reg, "reset"))

			// The SDK's stream ends with an error.
			stream := newClient(hs).Chat.Completions.NewStreaming(context.Background(), oai.ChatCompletionNewParams{
				Model: testModel, Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Tell me a story.")},
				MaxTokens: oai.Int(10)}, option.WithJSONSet("ignore_eos", true))
			n := 0
			for stream.Next() {
				n++
			}
			require.Error(t, stream.Err())
			require.LessOrEqual(t, n, after)
			require.NoError(t, stream.Close())

			// A non-streaming answer is one JSON body, never cut.
			code, body := postJSON(t, hs, "/v1/chat/completions", `{"model":"`+testModel+`","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`)
			require.Equal(t, http.StatusOK, code, body)
			require.Contains(t, body, `"finish_reason"`)
		})
	}
}

// TestFaultResetShortStream: a stream with no more events than reset_after ends normally.
func TestFaultResetShortStream(t *testing.T) {
	cfg := testConfig()
	cfg.Faults.ResetRate = 1
	cfg.Faults.ResetAfter = 100
	reg := prometheus.NewRegistry()
	_, hs := startServer(t, cfg, clock.RealClock{}, reg)
	code, body := postJSON(t, hs, "/v1/chat/completions", streamBody)
	require.Equal(t, http.StatusOK, code)
	data := sseData(t, body)
	require.Equal(t, "[DONE]", data[len(data)-1])
	require.Zero(t, faultCount(t, reg, "reset"))
}

// TestFaultHang: a hung request answers nothing until its client cancels; Close ends the
// hung requests with a 503.
func TestFaultHang(t *testing.T) {
	cfg := testConfig()
	cfg.Faults.HangRate = 1
	reg := prometheus.NewRegistry()
	s, hs := startServer(t, cfg, clock.RealClock{}, reg)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/v1/chat/completions", strings.NewReader(streamBody))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = errors.New("answered: " + resp.Status)
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return faultCount(t, reg, "hang") == 1 }, 10*time.Second, time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("a hung request returned: %v", err)
	default:
	}
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)

	// Close releases a request still hanging.
	codec := make(chan int, 1)
	go func() {
		resp, err := http.Post(hs.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"`+testModel+`","prompt":"hi"}`))
		if err != nil {
			codec <- 0
			return
		}
		resp.Body.Close()
		codec <- resp.StatusCode
	}()
	require.Eventually(t, func() bool { return faultCount(t, reg, "hang") == 2 }, 10*time.Second, time.Millisecond)
	s.Close()
	require.Equal(t, http.StatusServiceUnavailable, <-codec)
}

// TestFaultColdStart: /health answers 503 (and requests get vLLM's 503 JSON) until cold_start
// has passed on the replica's clock; /metrics answers throughout.
func TestFaultColdStart(t *testing.T) {
	cfg := testConfig()
	cfg.Faults.ColdStart = config.Duration(30 * time.Second)
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	reg := prometheus.NewRegistry()
	_, hs := startServer(t, cfg, clk, reg)

	get := func(p string) int {
		resp, err := http.Get(hs.URL + p)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusServiceUnavailable, get("/health"))
	require.Equal(t, http.StatusOK, get("/metrics"))
	code, body := postJSON(t, hs, "/v1/chat/completions", `{"model":"`+testModel+`","messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.JSONEq(t, `{"error":{"message":"The engine is starting.","type":"ServiceUnavailableError","param":null,"code":503}}`, body)

	clk.Step(30*time.Second - time.Nanosecond)
	require.Equal(t, http.StatusServiceUnavailable, get("/health"))
	clk.Step(time.Nanosecond)
	require.Equal(t, http.StatusOK, get("/health"))
	code, body = postJSON(t, hs, "/v1/chat/completions", `{"model":"`+testModel+`","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`)
	require.Equal(t, http.StatusOK, code, body)
	require.EqualValues(t, 3, faultCount(t, reg, "cold_start"))
	require.Equal(t, 1, testutil.CollectAndCount(reg, "strata_engine_sim_faults_injected_total"))
}

// TestFaultConfigRejected: New refuses rates outside [0, 1] and negative durations.
func TestFaultConfigRejected(t *testing.T) {
	for _, f := range []config.SimFaults{{ErrorRate: -0.1}, {HangRate: 1.1}, {ResetRate: 2}, {ResetAfter: -1},
		{ColdStart: config.Duration(-time.Second)}} {
		cfg := testConfig()
		cfg.Faults = f
		_, err := New(cfg, "r", clock.RealClock{}, nil)
		require.Error(t, err, "%+v", f)
	}
}

// BenchmarkFaultPlan is the per-request cost of drawing faults (every inference request pays it
// when any rate is set).
func BenchmarkFaultPlan(b *testing.B) {
	f := newFaults(config.SimFaults{ErrorRate: 0.1, HangRate: 0.1, ResetRate: 0.1}, 1, "sim-0", time.Time{})
	b.ReportAllocs()
	for b.Loop() {
		_ = f.plan()
	}
}
