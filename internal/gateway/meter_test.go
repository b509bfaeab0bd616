package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

func TestForceIncludeUsage(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		asked    bool
		want     string
	}{
		{"absent", `{"model":"m","stream":true}`, false,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{"absent, whitespace kept", "{ \"model\" : \"m\",\n \"stream\":true }\n", false,
			"{ \"model\" : \"m\",\n \"stream\":true ,\"stream_options\":{\"include_usage\":true}}\n"},
		{"empty object", ` { } `, false, ` { "stream_options":{"include_usage":true}} `},
		{"null", `{"stream_options":null,"model":"m"}`, false, `{"stream_options":{"include_usage":true},"model":"m"}`},
		{"false", `{"model":"m","stream_options":{"include_usage":false},"n":1}`, false,
			`{"model":"m","stream_options":{"include_usage":true},"n":1}`},
		{"continuous stats dropped when usage was not asked", `{"stream_options":{"continuous_usage_stats":true,"x":[1]}}`, false,
			`{"stream_options":{"include_usage":true,"x":[1]}}`},
		{"continuous stats kept when usage was asked", `{"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`, true,
			`{"stream_options":{"continuous_usage_stats":true,"include_usage":true}}`},
		{"escaped key, duplicates", `{"stream\u005foptions":{"include_usage":false},"stream_options":null}`, false,
			`{"stream\u005foptions":{"include_usage":true},"stream_options":{"include_usage":true}}`},
		{"nested key untouched", `{"metadata":{"stream_options":1},"big":12345678901234567890.5e3}`, false,
			`{"metadata":{"stream_options":1},"big":12345678901234567890.5e3,"stream_options":{"include_usage":true}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := forceIncludeUsage([]byte(tc.in), tc.asked)
			require.NoError(t, err)
			require.Equal(t, tc.want, string(got))
		})
	}
	for _, bad := range []string{`[]`, `{"a":`, `"x"`} {
		_, err := forceIncludeUsage([]byte(bad), false)
		require.Error(t, err, bad)
	}
}

// FuzzForceIncludeUsage: any JSON object comes out as a JSON object that asks for usage, with
// every other top-level field unchanged.
func FuzzForceIncludeUsage(f *testing.F) {
	f.Add(`{"model":"m","stream":true}`, false)
	f.Add(`{"stream_options":{"include_usage":false,"continuous_usage_stats":true}}`, false)
	f.Add(`{"stream_options":null,"stream_options":{}}`, true)
	f.Add(` { } `, true)
	f.Fuzz(func(t *testing.T, body string, asked bool) {
		var in map[string]json.RawMessage
		if json.Unmarshal([]byte(body), &in) != nil || in == nil {
			return // not a JSON object: ParseInferenceRequest refuses it first
		}
		out, err := forceIncludeUsage([]byte(body), asked)
		require.NoError(t, err)
		var got map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(out, &got), "%q", out)
		var opts openai.StreamOptions
		require.NoError(t, json.Unmarshal(got["stream_options"], &opts))
		require.True(t, opts.IncludeUsage)
		if !asked {
			require.False(t, opts.ContinuousUsageStats)
		}
		delete(in, "stream_options")
		delete(got, "stream_options")
		require.Equal(t, len(in), len(got))
		for k, v := range in {
			require.Equal(t, string(v), string(got[k]))
		}
	})
}

func TestParseEndpointServed(t *testing.T) {
	for in, want := range map[string][2]string{
		"":                         {"", ""},
		"sim-0":                    {"sim-0", ""},
		"sim-0;gpu=H100-SXM":       {"sim-0", "H100-SXM"},
		" a ; zone=x ; GPU = A100": {"a", "A100"},
		"a;gpu":                    {"a", ""},
	} {
		e, g := parseEndpointServed(in)
		require.Equal(t, want, [2]string{e, g}, in)
	}
}

func FuzzParseEndpointServed(f *testing.F) {
	f.Add("sim-0;gpu=H100-SXM")
	f.Add(";;gpu=;=")
	f.Fuzz(func(t *testing.T, v string) {
		e, g := parseEndpointServed(v)
		require.LessOrEqual(t, len(e), 128)
		require.LessOrEqual(t, len(g), 128)
		require.NotContains(t, e, ";")
		require.NotContains(t, g, ";")
	})
}

// canned is a next layer that answers every request with the same stream, in memory.
type canned struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (c *canned) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.err != nil {
		return nil, c.err
	}
	_, _ = io.Copy(io.Discard, r.Body)
	return &http.Response{StatusCode: c.status, Header: c.header.Clone(), Body: io.NopCloser(bytes.NewReader(c.body))}, nil
}

// cannedGateway is a gateway over a real store whose next layer is c, with one tenant and key.
func cannedGateway(tb testing.TB, c *canned) (*Gateway, *store.Store, string) {
	st := openTestStore(tb)
	a := NewAdmin(st, testSecret)
	ctx := context.Background()
	_, err := a.CreateTenant(ctx, "t", 0, 0, nil)
	require.NoError(tb, err)
	key, _, err := a.CreateKey(ctx, "t", "")
	require.NoError(tb, err)
	g, err := New(config.Default().Gateway, st, testSecret, c, nil, nil, nil)
	require.NoError(tb, err)
	return g, st, key
}

func TestNextLayerFails(t *testing.T) {
	c := &canned{err: errors.New("dial tcp: connection refused")}
	g, st, key := cannedGateway(t, c)
	r := httptest.NewRequest("POST", openai.PathChatCompletions, strings.NewReader(simpleChat))
	r.Header.Set("Authorization", "Bearer "+key)
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	require.Equal(t, 502, w.Code)
	require.JSONEq(t, errorBody(openai.ErrUpstream), w.Body.String())
	require.NotContains(t, w.Body.String(), "dial")
	recs, err := st.ListUsage(context.Background(), store.UsageFilter{})
	require.NoError(t, err)
	require.Empty(t, recs)
}

// FuzzMeterStream drives the SSE metering relay with arbitrary engine streams: the client
// receives the engine's events byte for byte, minus the usage-only chunks when it did not ask
// for usage; "done" runs once per [DONE] event, before that event is forwarded; the tally counts
// the forwarded content events and keeps the last usage block.
func FuzzMeterStream(f *testing.F) {
	var seed bytes.Buffer
	for _, ch := range vllmChunks(openai.PathChatCompletions, "m1") {
		seed.WriteString("data: " + ch + "\n\n")
	}
	seed.WriteString(`data: {"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}` + "\n\n")
	seed.WriteString("data: [DONE]\n\n")
	f.Add(seed.Bytes(), false)
	f.Add(seed.Bytes(), true)
	f.Add([]byte("data: {\"usage\":null}\r\n\r\n: comment\n\nevent: x\ndata: [DONE]\n"), false)
	f.Add([]byte("data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":1}}\n\ndata: {\"usage\":{}}"), false)
	f.Fuzz(func(t *testing.T, stream []byte, dropUsageOnly bool) {
		// The oracle: the events as the SSE reader frames them.
		var want bytes.Buffer
		var wantDoneAt []int
		var wantUsage *openai.Usage
		wantChunks := int64(0)
		rd := openai.NewSSEReader(bytes.NewReader(stream))
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			if ev.IsDone() {
				wantDoneAt = append(wantDoneAt, want.Len())
				want.Write(ev.Raw)
				continue
			}
			u, usageOnly := chunkUsage(ev.Data)
			if u != nil {
				wantUsage = u
			}
			if !usageOnly {
				wantChunks++
			}
			if usageOnly && dropUsageOnly {
				continue
			}
			want.Write(ev.Raw)
		}

		var got bytes.Buffer
		var doneAt []int
		firsts := 0
		tl, err := relayEvents(&got, bytes.NewReader(stream), dropUsageOnly,
			func() { firsts++ },
			func(*tally) { doneAt = append(doneAt, got.Len()) })
		if err != nil {
			require.ErrorIs(t, err, openai.ErrEventTooLarge)
			return
		}
		require.Equal(t, want.String(), got.String())
		require.Equal(t, wantDoneAt, doneAt)
		require.LessOrEqual(t, firsts, 1)
		require.Equal(t, wantChunks, tl.chunks)
		require.Equal(t, wantUsage, tl.usage)
	})
}
