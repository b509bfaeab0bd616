package sim

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

const testModel = "meta-llama/Llama-3.1-8B-Instruct"

// testConfig is the default simulator configuration with no delays.
func testConfig() config.Sim {
	cfg := config.Default().Sim
	zero := 0.0
	cfg.TimeScale = &zero
	return cfg
}

func startServer(t testing.TB, cfg config.Sim, clk clock.Clock, reg prometheus.Registerer) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(cfg, "replica-0", clk, reg)
	require.NoError(t, err)
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close() // first: it ends the requests still waiting on the engine
		hs.Close()
	})
	return s, hs
}

func newClient(hs *httptest.Server) *oai.Client {
	c := oai.NewClient(option.WithBaseURL(hs.URL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	return &c
}

func toMessages(msgs []chatMsg) []openai.Message {
	out := make([]openai.Message, len(msgs))
	for i, m := range msgs {
		out[i] = openai.Message{Role: m.role, Content: openai.TextContent(m.content)}
	}
	return out
}

func postJSON(t testing.TB, hs *httptest.Server, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(hs.URL+path, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// sseData returns the data payloads of an event stream.
func sseData(t testing.TB, body string) []string {
	t.Helper()
	var out []string
	r := openai.NewSSEReader(strings.NewReader(body))
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		out = append(out, string(ev.Data))
	}
}

// scrape fetches /metrics and parses it with expfmt.
func scrape(t testing.TB, hs *httptest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(hs.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// metricValue is the value of the family's only series (counter, gauge, or histogram sum).
func metricValue(t testing.TB, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	f, ok := fams[name]
	require.True(t, ok, "metric %s missing", name)
	var sum float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return sum
}

// mtbench reads the MT-Bench questions, or skips the test when the shared data is absent.
func mtbench(t testing.TB) [][]string {
	t.Helper()
	f, err := os.Open("../../../../shared/data/prompts/mtbench_question.jsonl")
	if err != nil {
		t.Skipf("shared prompts not available: %v", err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var q struct {
			Turns []string `json:"turns"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &q))
		out = append(out, q.Turns)
	}
	require.NoError(t, sc.Err())
	return out
}
