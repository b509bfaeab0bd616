package platform

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

// collect drains a Responses stream from the official client.
func collect(t *testing.T, c *oai.Client, params responses.ResponseNewParams, opts ...option.RequestOption) []responses.ResponseStreamEventUnion {
	t.Helper()
	s := c.Responses.NewStreaming(t.Context(), params, opts...)
	defer s.Close()
	var evs []responses.ResponseStreamEventUnion
	for s.Next() {
		evs = append(evs, s.Current())
	}
	require.NoError(t, s.Err())
	return evs
}

func eventTypes(evs []responses.ResponseStreamEventUnion) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func requireSequenced(t *testing.T, evs []responses.ResponseStreamEventUnion) {
	t.Helper()
	for i, e := range evs {
		require.Equal(t, int64(i), e.SequenceNumber, "event %d (%s)", i, e.Type)
	}
}

func TestResponseStream(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	evs := collect(t, c, responses.ResponseNewParams{Model: "m", Input: stringInput("stream me please")})

	require.Equal(t, []string{
		"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.completed",
	}, eventTypes(evs))
	requireSequenced(t, evs)

	created, final := evs[0].Response, evs[len(evs)-1].Response
	require.Equal(t, responses.ResponseStatusInProgress, created.Status)
	require.Empty(t, created.Output)
	require.Equal(t, created.ID, final.ID)
	require.Equal(t, responses.ResponseStatusCompleted, final.Status)

	itemID := evs[2].Item.ID
	require.True(t, strings.HasPrefix(itemID, "msg_"))
	require.Equal(t, "in_progress", string(evs[2].Item.Status))
	var deltas strings.Builder
	for _, e := range evs[4:9] {
		require.Equal(t, itemID, e.ItemID)
		require.Zero(t, e.OutputIndex)
		require.Zero(t, e.ContentIndex)
		deltas.WriteString(e.Delta)
	}
	require.Equal(t, "You said: stream me please", deltas.String())
	require.Equal(t, deltas.String(), evs[9].Text)
	require.Equal(t, deltas.String(), evs[10].Part.Text)
	require.Equal(t, "completed", string(evs[11].Item.Status))
	require.Equal(t, deltas.String(), final.OutputText())
	require.Equal(t, int64(4), final.Usage.InputTokens, "usage from the include_usage chunk")
	require.Equal(t, int64(5), final.Usage.OutputTokens)

	call := env.eng.last(t)
	require.True(t, call.Chat.Stream)
	require.True(t, call.Chat.StreamOptions.IncludeUsage, "usage is asked for")
	require.Equal(t, final.ID, call.Header.Get(openai.HeaderSession))

	stored, err := c.Responses.Get(t.Context(), final.ID, responses.ResponseGetParams{})
	require.NoError(t, err, "stored after completion")
	require.JSONEq(t, final.RawJSON(), stored.RawJSON())

	// And the chain continues from a streamed response.
	next := collect(t, c, responses.ResponseNewParams{Model: "m", Input: stringInput("again"), PreviousResponseID: oai.String(final.ID)})
	require.Equal(t, "response.completed", next[len(next)-1].Type)
	require.Equal(t, []string{"user: stream me please", "assistant: You said: stream me please", "user: again"}, sentMessages(env.eng.last(t)))
}

// TestResponseStreamWire reads the raw stream: every event has an "event:" line equal to its
// data's type, and there is no "[DONE]" (the Responses API does not send one).
func TestResponseStreamWire(t *testing.T) {
	env := newTestEnv(t)
	status, header, body := env.do(t, "POST", "/v1/responses", "sk-alice", `{"model":"m","input":"hi","stream":true}`)
	require.Equal(t, 200, status)
	require.Equal(t, "text/event-stream", header.Get("Content-Type"))
	rd := openai.NewSSEReader(strings.NewReader(string(body)))
	n := 0
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.False(t, ev.IsDone())
		var data struct {
			Type string `json:"type"`
			Seq  *int   `json:"sequence_number"`
		}
		require.NoError(t, json.Unmarshal(ev.Data, &data))
		require.Equal(t, ev.Event, data.Type)
		require.Equal(t, n, *data.Seq)
		n++
	}
	require.Greater(t, n, 8)
}

func TestResponseStreamIncomplete(t *testing.T) {
	env := newTestEnv(t)
	evs := collect(t, env.client("sk-alice"), responses.ResponseNewParams{Model: "m", Input: stringInput("a b c d"), MaxOutputTokens: oai.Int(2)})
	requireSequenced(t, evs)
	last := evs[len(evs)-1]
	require.Equal(t, "response.incomplete", last.Type)
	require.Equal(t, responses.ResponseStatusIncomplete, last.Response.Status)
	require.Equal(t, "max_output_tokens", last.Response.IncompleteDetails.Reason)
	require.Equal(t, "incomplete", string(evs[len(evs)-2].Item.Status))
	require.Equal(t, "You said:", last.Response.OutputText())
}

func TestResponseStreamFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream string // what the engine sends after the status line
		types  []string
		msg    string
	}{
		{"cut short", `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}` + "\n\n",
			[]string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
				"response.output_text.delta", "response.failed"}, failedMsgUpstream},
		{"error event", `data: {"error":{"message":"The engine ran out of KV cache.","type":"InternalServerError","param":null,"code":500}}` + "\n\n",
			[]string{"response.created", "response.in_progress", "error", "response.failed"}, "The engine ran out of KV cache."},
		{"garbage", "data: {not json\n\n",
			[]string{"response.created", "response.in_progress", "response.failed"}, failedMsgUpstream},
		{"done without finish", "data: [DONE]\n\n",
			[]string{"response.created", "response.in_progress", "response.failed"}, failedMsgUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t)
			env.eng.setHandler(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, tc.stream)
			})
			evs := collect(t, env.client("sk-alice"), responses.ResponseNewParams{Model: "m", Input: stringInput("hi")})
			require.Equal(t, tc.types, eventTypes(evs))
			requireSequenced(t, evs)
			last := evs[len(evs)-1].Response
			require.Equal(t, responses.ResponseStatusFailed, last.Status)
			require.Equal(t, "server_error", string(last.Error.Code))
			require.Equal(t, tc.msg, last.Error.Message)
			_, err := env.client("sk-alice").Responses.Get(t.Context(), last.ID, responses.ResponseGetParams{})
			requireAPIError(t, err, 404, openai.CodeNotFound)
		})
	}
}
