package platform

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

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
		`{"model":"m","input":"x","tools":[{"type":"mcp","server_label":"wx","server_url":"https://mcp.example/mcp","headers":{"X-K":"v"},"authorization":"tok","allowed_tools":{"tool_names":["a"],"read_only":true},"require_approval":{"always":{"tool_names":["b"]},"never":{"read_only":true}}}]}`,
		`{"model":"m","input":[{"type":"mcp_approval_response","approval_request_id":"mcpr_1","approve":true,"reason":"ok"}],"previous_response_id":"resp_1","tools":[{"type":"mcp","server_label":"wx","server_url":"http://127.0.0.1:1/","require_approval":"never","allowed_tools":["a","b"]}]}`,
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
		for _, it := range req.Input {
			require.NotEmpty(t, it.ID)
			require.True(t, json.Valid(listItem(it)))
		}
		tn := &turn{req: req, id: "resp_x", session: "resp_x", convo: chatMessages(req.Input)}
		if len(tn.convo) == 0 {
			// Only mcp_approval_response items: the conversation is the history the request
			// continues (previous_response_id or conversation, required with them).
			require.True(t, req.PreviousResponseID != "" || req.Conversation != "")
			return
		}
		chat, err := openai.ParseInferenceRequest(openai.PathChatCompletions, tn.chatBody(req.Stream))
		require.NoError(t, err, "the translation is a valid chat completion")
		require.Equal(t, req.Model, chat.Model)
		for _, it := range req.Input {
			require.NotEmpty(t, it.ID)
			require.True(t, json.Valid(listItem(it)))
		}
	})
}

// FuzzParseUpload: any multipart body is a 400/413 naming what is wrong, or an upload with a
// filename, a known purpose and content within the limit.
func FuzzParseUpload(f *testing.F) {
	const boundary = "XyZ"
	for _, seed := range []string{
		"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.md\"\r\n\r\n# hi\r\n--XyZ--\r\n",
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/x.txt\"\r\n\r\nx\r\n--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n--XyZ\r\nContent-Disposition: form-data; name=\"expires_after[seconds]\"\r\n\r\n3600\r\n--XyZ--\r\n",
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n0123456789abcdefXYZ\r\n--XyZ--\r\n",
		"--XyZ\r\n\r\n--XyZ--", "", "garbage",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		up, err := parseUpload("multipart/form-data; boundary="+boundary, bytes.NewReader(body), 16)
		if err != nil {
			e := openai.AsError(err)
			require.Contains(t, []int{400, 413}, e.Status, "%v", err)
			require.NotEmpty(t, e.Message)
			return
		}
		require.NotEmpty(t, up.filename)
		require.NotContains(t, up.filename, "/")
		require.Contains(t, filePurposes, up.purpose)
		require.LessOrEqual(t, len(up.content), 16)
		require.NotEmpty(t, up.content)
	})
}

// FuzzParseItems: conversation items are either a 400 or items with ids whose rendering
// parses back to the same item.
func FuzzParseItems(f *testing.F) {
	for _, seed := range []string{
		`[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"}]`,
		`[{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"x"}]}]`,
		`[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"a","annotations":[]}]}]`,
		`[]`, `{}`, `[1]`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		items, err := parseItems("items", raw, false)
		if err != nil {
			e := openai.AsError(err)
			require.Equal(t, 400, e.Status, "%v", err)
			require.NotEmpty(t, e.Code)
			return
		}
		for _, it := range items {
			require.NotEmpty(t, it.ID)
			back, err := parseItem("x", it.Item)
			require.NoError(t, err, "a rendered item parses: %s", it.Item)
			require.Equal(t, it.ID, back.ID)
			require.JSONEq(t, string(it.Item), string(listItem(back)))
		}
	})
}

// FuzzExtractText: any uploaded content of any supported kind is text or an *errInvalidFile,
// never a panic (the PDF reader's panics are recovered), and valid UTF-8 text chunks.
func FuzzExtractText(f *testing.F) {
	f.Add("a.pdf", minimalPDF("Hello"))
	f.Add("a.pdf", []byte("%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF"))
	f.Add("a.html", []byte("<p>x<script>y</script></p>"))
	f.Add("a.json", []byte(`{"a":[1,2]}`))
	f.Add("a.md", []byte("# x\n\xff"))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		var (
			text string
			err  error
		)
		done := make(chan struct{})
		go func() { defer close(done); text, err = extractText(name, b) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("extractText(%q) hangs on %q", name, b)
		}
		if err != nil {
			var bad *errInvalidFile
			require.ErrorAs(t, err, &bad)
			return
		}
		if len(text) > 4096 {
			text = text[:4096]
		}
		var chunks []string
		done = make(chan struct{})
		go func() {
			defer close(done)
			chunks, err = chunkText(text, chunking{MaxChunkSizeTokens: 100, ChunkOverlapTokens: 50})
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("chunkText hangs on %q", text)
		}
		require.NoError(t, err)
		for _, c := range chunks {
			require.True(t, utf8.ValidString(c))
		}
	})
}
