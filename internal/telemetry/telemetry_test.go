package telemetry

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "warn", "json")
	require.NoError(t, err)
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	require.NotContains(t, buf.String(), "hidden")
	require.Contains(t, buf.String(), `"msg":"shown"`)

	_, err = NewLogger(&buf, "loud", "text")
	require.EqualError(t, err, `log level "loud": want debug, info, warn or error`)
	_, err = NewLogger(&buf, "info", "xml")
	require.EqualError(t, err, `log format "xml": want text or json`)
}

// Each registry is its own: two stacks in one process (as in tests) never collide.
func TestRegistriesAreIndependent(t *testing.T) {
	a, b := NewRegistry(), NewRegistry()
	for _, reg := range []*prometheus.Registry{a, b} {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_test_total", Help: "test"})
		require.NoError(t, reg.Register(c))
		c.Inc()
	}
	rec := httptest.NewRecorder()
	MetricsHandler(a).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	require.True(t, strings.Contains(rec.Body.String(), "strata_test_total 1"))
	require.Contains(t, rec.Body.String(), "go_goroutines")
}
