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

func TestForceStreamUsage(t *testing.T) {
	const both = `{"include_usage":true,"continuous_usage_stats":true}`
	for _, tc := range []struct {
		name, in string
		want     string
	}{
		{"absent", `{"model":"m","stream":true}`,
			`{"model":"m","stream":true,"stream_options":` + both + `}`},
		{"absent, whitespace kept", "{ \"model\" : \"m\",\n \"stream\":true }\n",
			"{ \"model\" : \"m\",\n \"stream\":true ,\"stream_options\":" + both + "}\n"},
		{"empty object", ` { } `, ` { "stream_options":` + both + `} `},
		{"null", `{"stream_options":null,"model":"m"}`, `{"stream_options":` + both + `,"model":"m"}`},
		{"false", `{"model":"m","stream_options":{"include_usage":false},"n":1}`,
			`{"model":"m","stream_options":{"continuous_usage_stats":true,"include_usage":true},"n":1}`},
		{"other fields kept", `{"stream_options":{"continuous_usage_stats":false,"x":[1]}}`,
			`{"stream_options":{"continuous_usage_stats":true,"include_usage":true,"x":[1]}}`},
		{"case variants removed", `{"stream_options":{"Include_Usage":false,"CONTINUOUS_USAGE_STATS":false}}`,
			`{"stream_options":{"continuous_usage_stats":true,"include_usage":true}}`},
		{"escaped key, duplicates", `{"stream\u005foptions":{"include_usage":false},"stream_options":null}`,
			`{"stream\u005foptions":{"continuous_usage_stats":true,"include_usage":true},"stream_options":` + both + `}`},
		{"nested key untouched", `{"metadata":{"stream_options":1},"big":12345678901234567890.5e3}`,
			`{"metadata":{"stream_options":1},"big":12345678901234567890.5e3,"stream_options":` + both + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, _, err := forceStreamUsage([]byte(tc.in))
			require.NoError(t, err)
			require.Equal(t, tc.want, string(got))
		})
	}
	for _, bad := range []string{`[]`, `{"a":`, `"x"`} {
		_, _, _, err := forceStreamUsage([]byte(bad))
		require.Error(t, err, bad)
	}
}

// TestClientStreamUsage: the usage a client asked for, as vLLM reads stream_options.
func TestClientStreamUsage(t *testing.T) {
	for body, want := range map[string][2]bool{
		`{}`:                      {false, false},
		`{"stream_options":null}`: {false, false},
		`{"stream_options":{}}`:   {true, false},
		`{"stream_options":{"include_usage":null}}`:                                {true, false},
		`{"stream_options":{"include_usage":false,"continuous_usage_stats":true}}`: {false, false},
		`{"stream_options":{"continuous_usage_stats":true}}`:                       {true, true},
		`{"stream_options":{"include_usage":true},"stream_options":null}`:          {false, false},
		`{"stream_options":{"Include_Usage":false}}`:                               {true, false},
	} {
		inc, cont := clientStreamUsage([]byte(body))
		require.Equal(t, want, [2]bool{inc, cont}, body)
	}
}

// FuzzForceStreamUsage: any JSON object comes out as a JSON object that asks for usage on every
// chunk, with every other top-level field unchanged.
func FuzzForceStreamUsage(f *testing.F) {
	f.Add(`{"model":"m","stream":true}`)
	f.Add(`{"stream_options":{"include_usage":false,"continuous_usage_stats":true}}`)
	f.Add(`{"stream_options":null,"stream_options":{}}`)
	f.Add(` { } `)
	f.Fuzz(func(t *testing.T, body string) {
		var in map[string]json.RawMessage
		if json.Unmarshal([]byte(body), &in) != nil || in == nil {
			return // not a JSON object: ParseInferenceRequest refuses it first
		}
		out, _, _, err := forceStreamUsage([]byte(body))
		require.NoError(t, err)
		var got map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(out, &got), "%q", out)
		var opts openai.StreamOptions
		require.NoError(t, json.Unmarshal(got["stream_options"], &opts))
		require.True(t, opts.IncludeUsage)
		require.True(t, opts.ContinuousUsageStats)
		delete(in, "stream_options")
		delete(got, "stream_options")
		require.Equal(t, len(in), len(got))
		for k, v := range in {
			require.Equal(t, string(v), string(got[k]))
		}
	})
}

func TestParseEndpointServed(t *testing.T) {
	for in, want := range map[string][3]string{
		"":                          {"", "", ""},
		"sim-0":                     {"sim-0", "", ""},
		"sim-0;gpu=H100-SXM":        {"sim-0", "H100-SXM", ""},
		" a ; zone=x ; GPU = A100":  {"a", "A100", ""},
		"a;gpu":                     {"a", "", ""},
		"a;gpu=L4;adapter=sql-lora": {"a", "L4", "sql-lora"},
	} {
		e, g, ad := parseEndpointServed(in)
		require.Equal(t, want, [3]string{e, g, ad}, in)
	}
}

func FuzzParseEndpointServed(f *testing.F) {
	f.Add("sim-0;gpu=H100-SXM")
	f.Add(";;gpu=;=;adapter=x")
	f.Fuzz(func(t *testing.T, v string) {
		e, g, ad := parseEndpointServed(v)
		for _, s := range []string{e, g, ad} {
			require.LessOrEqual(t, len(s), 128)
			require.NotContains(t, s, ";")
		}
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

// FuzzMeterStream drives the SSE metering relay with arbitrary engine streams. Oracle: the
// client receives the engine's events in order, each byte for byte, except that usage-only chunks
// are dropped unless keepFinal, and the top-level "usage" member of other chunks is removed
// unless keepChunk, leaving a JSON object equal to the original minus that member; "done" runs
// once per [DONE] event, before it is forwarded; the tally counts content events and keeps the
// last usage block.
func FuzzMeterStream(f *testing.F) {
	var seed bytes.Buffer
	for _, ch := range withChunkUsage(openai.PathChatCompletions, vllmChunks(openai.PathChatCompletions, "m1"), 5) {
		seed.WriteString("data: " + ch + "\n\n")
	}
	seed.WriteString(`data: {"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}` + "\n\n")
	seed.WriteString("data: [DONE]\n\n")
	f.Add(seed.Bytes(), false, false)
	f.Add(seed.Bytes(), true, false)
	f.Add(seed.Bytes(), true, true)
	f.Add([]byte("data: {\"usage\":null}\r\n\r\n: comment\n\nevent: x\ndata: [DONE]\n"), false, false)
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1}, \"choices\":[{}]}\n\ndata: {\"usage\":{}}"), false, false)
	f.Add([]byte("data: {\"choices\":[1],\n"+"data: \"usage\":{}}\n\n"), false, false)
	f.Fuzz(func(t *testing.T, stream []byte, keepFinal, keepChunk bool) {
		type inEvent struct {
			raw, data []byte
			done      bool
			c         chunkInfo
		}
		var want []inEvent
		var wantUsage *openai.Usage
		wantChunks := int64(0)
		rd := openai.NewSSEReader(bytes.NewReader(stream))
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			e := inEvent{raw: ev.Raw, data: ev.Data, done: ev.IsDone()}
			if !e.done {
				e.c = inspectChunk(ev.Data)
				if e.c.usage != nil {
					wantUsage = e.c.usage
				}
				if !e.c.usageOnly {
					wantChunks++
				}
				if e.c.usageOnly && !keepFinal {
					continue
				}
			}
			want = append(want, e)
		}

		var got bytes.Buffer
		var doneAt []int
		firsts := 0
		tl, err := relayEvents(&got, bytes.NewReader(stream), relayOpts{keepChunkUsage: keepChunk, keepFinalUsage: keepFinal},
			func() { firsts++ },
			func(*tally) error { doneAt = append(doneAt, got.Len()); return nil })
		if err != nil {
			require.ErrorIs(t, err, openai.ErrEventTooLarge)
			return
		}
		require.LessOrEqual(t, firsts, 1)
		require.Equal(t, wantChunks, tl.chunks)
		require.Equal(t, wantUsage, tl.usage)

		// Walk the output: each event is the input's, or the input's minus its usage member.
		out := got.Bytes()
		pos := 0
		var gotDoneAt []int
		for _, e := range want {
			if e.done {
				gotDoneAt = append(gotDoneAt, pos)
			}
			if e.done || e.c.usage == nil || e.c.usageOnly || keepChunk {
				require.True(t, bytes.HasPrefix(out[pos:], e.raw), "event forwarded byte for byte")
				pos += len(e.raw)
				continue
			}
			next := openai.NewSSEReader(bytes.NewReader(out[pos:]))
			ev, err := next.Next()
			require.NoError(t, err)
			var before, after map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(e.data, &before))
			require.NoError(t, json.Unmarshal(ev.Data, &after), "%q", ev.Data)
			delete(before, "usage")
			require.Equal(t, len(before), len(after))
			for k, v := range before {
				require.Equal(t, string(v), string(after[k]))
			}
			pos += len(ev.Raw)
		}
		require.Equal(t, len(out), pos)
		require.Equal(t, gotDoneAt, doneAt)
	})
}

// fakeStreamFor is the stream the fake engine sends for a complete streamed request whose
// stream_options asked includeUsage / continuous: the ground truth of what a client asking for
// exactly that must receive through the gateway.
func fakeStreamFor(path, model string, u openai.Usage, includeUsage, continuous bool) string {
	var b strings.Builder
	chunks := vllmChunks(path, model)
	if includeUsage && continuous {
		chunks = withChunkUsage(path, chunks, u.PromptTokens)
	}
	for _, c := range chunks {
		b.WriteString("data: " + c + "\n\n")
	}
	if includeUsage {
		ub, _ := json.Marshal(u)
		b.WriteString(`data: {"id":"cmpl-1","object":"` + chunkObject(path) + `","created":1700000000,"model":"` + model + `","choices":[],"usage":` + string(ub) + "}\n\n")
	}
	b.WriteString("data: [DONE]\n\n")
	return b.String()
}

// FuzzInspectChunk: wherever the allocation-free path for vLLM's chunk shape answers, it answers
// exactly as the general decoder path.
func FuzzInspectChunk(f *testing.F) {
	for _, c := range withChunkUsage(openai.PathChatCompletions, vllmChunks(openai.PathChatCompletions, "m1"), 5) {
		f.Add(c)
	}
	f.Add(`{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`)
	f.Add(`{"a":{"usage":1},"choices":[{}],"usage":null}`)
	f.Add(`{"usag\u0065":{},"usage":{}}`)
	f.Fuzz(func(t *testing.T, data string) {
		if !json.Valid([]byte(data)) {
			return
		}
		fast, ok := inspectChunkFast([]byte(data))
		if !ok {
			return
		}
		slow := inspectChunkDecoder([]byte(data))
		require.Equal(t, slow.usage, fast.usage, data)
		require.Equal(t, slow.usageOnly, fast.usageOnly, data)
		if slow.usage != nil {
			require.Equal(t, string(slow.stripped), string(fast.stripped), data)
		}
	})
}
