package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteErrorEnvelope(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		want   string
	}{
		{"missing param", MissingParam("messages"), 400,
			`{"error":{"message":"Missing required parameter: 'messages'.","type":"invalid_request_error","param":"messages","code":"missing_required_parameter"}}`},
		{"wrapped model not found", fmt.Errorf("route: %w", ModelNotFound("m")), 404,
			`{"error":{"message":"The model 'm' does not exist or you do not have access to it.","type":"invalid_request_error","param":"model","code":"model_not_found"}}`},
		{"body too large", &http.MaxBytesError{Limit: 10}, 413,
			`{"error":{"message":"Request body too large.","type":"invalid_request_error","param":null,"code":"request_too_large"}}`},
		{"internal detail never leaks", errors.New("pq: password authentication failed for user root"), 500,
			`{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`},
		{"deadline", context.DeadlineExceeded, 504,
			`{"error":{"message":"The request timed out.","type":"server_error","param":null,"code":null}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, tc.err)
			require.Equal(t, tc.status, rec.Code)
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			require.JSONEq(t, tc.want, rec.Body.String())
		})
	}
}

func TestParseErrorRoundTrip(t *testing.T) {
	in := Unauthorized("Incorrect API key provided.")
	out := ParseError(401, MarshalError(in))
	require.Equal(t, in, out)
	// vLLM's envelope carries an integer code.
	v := ParseError(400, []byte(`{"error":{"message":"too long","type":"BadRequestError","param":null,"code":400}}`))
	require.Equal(t, &Error{Status: 400, Message: "too long", Type: "BadRequestError"}, v)
	require.Nil(t, ParseError(500, []byte("<html>")))
}

func TestParseInferenceRequest(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		param, code      string
	}{
		{"malformed", PathChatCompletions, `{"model":`, "", CodeInvalidJSON},
		{"no model", PathChatCompletions, `{"messages":[{"role":"user","content":"hi"}]}`, "model", CodeMissingParam},
		{"no messages", PathChatCompletions, `{"model":"m"}`, "messages", CodeMissingParam},
		{"empty messages", PathChatCompletions, `{"model":"m","messages":[]}`, "messages", CodeMissingParam},
		{"no prompt", PathCompletions, `{"model":"m","prompt":null}`, "prompt", CodeMissingParam},
		{"no input", PathEmbeddings, `{"model":"m"}`, "input", CodeMissingParam},
		{"negative max_tokens", PathCompletions, `{"model":"m","prompt":"x","max_tokens":-1}`, "max_tokens", "invalid_value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseInferenceRequest(tc.path, []byte(tc.body))
			e := AsError(err)
			require.Equal(t, 400, e.Status)
			require.Equal(t, tc.param, e.Param)
			require.Equal(t, tc.code, e.Code)
		})
	}
	r, err := ParseInferenceRequest(PathChatCompletions, []byte(`{"model":"m","stream":true,"max_completion_tokens":7,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}]}`))
	require.NoError(t, err)
	require.Equal(t, "system: be brief\nuser: hi\n", r.PromptText())
	n, ok := r.OutputLimit()
	require.True(t, ok)
	require.Equal(t, 7, n)
	r, err = ParseInferenceRequest(PathCompletions, []byte(`{"model":"m","prompt":["a","b"]}`))
	require.NoError(t, err)
	require.Equal(t, "a b ", r.PromptText())
}

func FuzzParseInferenceRequest(f *testing.F) {
	f.Add(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	f.Add(`{"model":"m","prompt":[[1,2],[3]]}`)
	f.Add(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		for _, p := range []string{PathChatCompletions, PathCompletions, PathEmbeddings} {
			r, err := ParseInferenceRequest(p, []byte(body))
			if err != nil {
				var e *Error
				require.ErrorAs(t, err, &e)
				require.Equal(t, 400, e.Status)
				require.True(t, json.Valid(MarshalError(err)))
				continue
			}
			_ = r.PromptText()
		}
	})
}
