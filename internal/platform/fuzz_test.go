package platform

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

// FuzzParseCreateRequest: any body is either a 400 naming what is wrong, or a request whose
// chat translation is a valid chat completion body.
func FuzzParseCreateRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","input":"hi"}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},{"type":"message","role":"assistant","id":"msg_1","status":"completed","content":[{"type":"output_text","text":"c","annotations":[]}]}]}`,
		`{"model":"m","input":"x","instructions":"be brief","max_output_tokens":16,"temperature":0.2,"top_p":0.9,"store":false,"metadata":{"a":"b"},"previous_response_id":"resp_1","stream":true}`,
		`{"model":"m","input":"x","tools":[],"tool_choice":"none","text":{"format":{"type":"text"}},"reasoning":{"effort":null}}`,
		`{"model":"m","input":[{"role":"developer","content":"x"}],"metadata":{"k":"` + string(make([]byte, 600)) + `"}}`,
		`{"model":"m","input":[{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":[{"type":"input_text","text":"42"}]}],"tools":[{"type":"function","name":"f","parameters":{"type":"object"},"strict":true}],"tool_choice":{"type":"function","name":"f"},"parallel_tool_calls":false,"max_infer_iters":3}`,
		`{"model":"m","input":"x","tools":[{"type":"file_search"}],"conversation":{"id":"conv_1"}}`,
		`{"model":"m","input":[{}]}`, `{"model":"m","input":[null]}`, `{"input":[1,2]}`, `[]`, `null`, `{"model":1e999}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseCreateRequest(body)
		if err != nil {
			e := openai.AsError(err)
			require.Equal(t, 400, e.Status, "every rejection is a 400: %v", err)
			require.NotEmpty(t, e.Message)
			require.NotEmpty(t, e.Code)
			return
		}
		require.NotEmpty(t, req.Model)
		require.NotEmpty(t, req.Input)
		tn := &turn{req: req, id: "resp_x", session: "resp_x", convo: chatMessages(req.Input)}
		chat, err := openai.ParseInferenceRequest(openai.PathChatCompletions, tn.chatBody(req.Stream))
		require.NoError(t, err, "the translation is a valid chat completion")
		require.Equal(t, req.Model, chat.Model)
		for _, it := range req.Input {
			require.NotEmpty(t, it.ID)
			require.True(t, json.Valid(listItem(it)))
		}
	})
}
