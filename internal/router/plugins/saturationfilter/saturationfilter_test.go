package saturationfilter

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

func ep(name string, waiting int, kv float64, stale bool) *scheduling.Endpoint {
	e := &scheduling.Endpoint{Name: name, Stale: stale}
	e.Metrics.Waiting, e.Metrics.KVCacheUsage = waiting, kv
	return e
}

func names(eps []*scheduling.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Name)
	}
	return out
}

func TestFilter(t *testing.T) {
	eps := []*scheduling.Endpoint{ep("ok", 5, 0.8, false), ep("queue", 6, 0.1, false), ep("kv", 0, 0.81, false), ep("stale", 0, 0, true)}
	p, err := Factory("x", nil, nil)
	require.NoError(t, err)
	got, err := p.(*Filter).Filter(&scheduling.Request{}, eps)
	require.NoError(t, err)
	require.Equal(t, []string{"ok"}, names(got))

	p, err = Factory("x", json.RawMessage(`{"queueDepthThreshold":10,"kvCacheUtilThreshold":0.9,"dropStale":false}`), nil)
	require.NoError(t, err)
	got, _ = p.(*Filter).Filter(&scheduling.Request{}, eps)
	require.Equal(t, []string{"ok", "queue", "kv", "stale"}, names(got))

	all := []*scheduling.Endpoint{ep("a", 50, 0.1, false), ep("b", 0, 0.99, false), ep("c", 0, 0, true)}
	p, _ = Factory("x", nil, nil)
	got, err = p.(*Filter).Filter(&scheduling.Request{}, all)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, names(got), "never filters every endpoint away")
}

func TestFactoryErrors(t *testing.T) {
	for params, want := range map[string]string{
		`{"queueDepthThreshold":-1}`:   "parameters.queueDepthThreshold: must be >= 0, got -1",
		`{"kvCacheUtilThreshold":1.5}`: "parameters.kvCacheUtilThreshold: must be in [0, 1], got 1.5",
		`{"dropStale":"yes"}`:          "parameters.dropStale: want bool, got string",
	} {
		_, err := Factory("x", json.RawMessage(params), nil)
		require.EqualError(t, err, want)
	}
}
