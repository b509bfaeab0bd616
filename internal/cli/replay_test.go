package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// runReplay runs replayCmd directly (it is registered in cli.go by the lead).
func runReplay(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdout: &out, stderr: &errb}
	cmd := replayCmd(g)
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func TestReplayCmd(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "t.jsonl")
	require.NoError(t, os.WriteFile(trace, []byte(`{"timestamp": 0, "input_length": 1100, "output_length": 10, "hash_ids": [0, 1, 2]}
{"timestamp": 100, "input_length": 1200, "output_length": 5, "hash_ids": [0, 1, 3]}
`), 0o600))
	policy := filepath.Join(dir, "p.yaml")
	require.NoError(t, os.WriteFile(policy, []byte("router:\n  weights: {prefix: 0}\n"), 0o600))
	jsonOut := filepath.Join(dir, "r.json")
	out, _, err := runReplay(t, "--trace", trace, "--replicas", "2", "--policy", "round-robin,default,"+policy, "--json", jsonOut, "--chart", filepath.Join(dir, "c.svg"), "--quiet")
	require.NoError(t, err)
	require.Contains(t, out, "round-robin")
	require.Contains(t, out, "TTFT p90 s")
	var v struct {
		Requests int `json:"requests"`
		Results  []struct {
			Policy    string `json:"policy"`
			Completed int    `json:"completed"`
		} `json:"results"`
	}
	b, err := os.ReadFile(jsonOut)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &v))
	require.Equal(t, 2, v.Requests)
	require.Len(t, v.Results, 3)
	require.Equal(t, policy, v.Results[2].Policy)
	require.Equal(t, 2, v.Results[1].Completed)
	svg, err := os.ReadFile(filepath.Join(dir, "c.svg"))
	require.NoError(t, err)
	require.Contains(t, string(svg), "<svg")

	synth := filepath.Join(dir, "s.jsonl")
	out, _, err = runReplay(t, "synth", "--out", synth, "--tenants", "4", "--requests", "30", "--rate", "5")
	require.NoError(t, err)
	require.Contains(t, out, "wrote 30 requests (4 tenants")
	out, _, err = runReplay(t, "--trace", synth, "--replicas", "2", "--policy", "default", "--quiet")
	require.NoError(t, err)
	require.Contains(t, out, "default")
	_, _, err = runReplay(t, "synth")
	require.ErrorContains(t, err, "--out: required")

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--trace: required"},
		{[]string{"--trace", trace, "--policy", "fastest"}, `unknown policy "fastest"`},
		{[]string{"--trace", trace, "--replicas", "0"}, "replicas: must be at least 1"},
		{[]string{"--trace", trace, "--format", "azure"}, "t.jsonl: header: "},
		{[]string{"--trace", trace, "--gpu", "TPU"}, "TPU"},
	} {
		_, _, err := runReplay(t, append(tt.args, "--quiet")...)
		require.ErrorContains(t, err, tt.want)
	}
}
