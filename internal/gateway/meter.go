package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// usageWriteTimeout bounds the wait for one usage record's commit when the ledger configuration
// sets none. The write runs even when the client is gone (its context detached from the request's
// cancellation), so it needs its own bound.
const usageWriteTimeout = 10 * time.Second

// forceStreamUsage returns a streaming request body whose stream_options asks the engine for
// usage on every chunk: include_usage (the final usage-only chunk, OpenAI API reference,
// "stream_options") and vLLM's continuous_usage_stats (usage on each chunk,
// vllm/entrypoints/openai/protocol.py StreamOptions; honoured only together with include_usage).
// With usage on every chunk the gateway knows the tokens generated so far at any moment, so a
// client that disconnects mid-stream is billed exactly for them. The relay strips whatever usage
// the client did not ask for (relayEvents). Only the stream_options value is rewritten; every
// other byte of the body is kept, and inside stream_options the other fields are kept. Every
// top-level occurrence of the key is rewritten (JSON decoders disagree on duplicates, Go's and
// Python's keep the last). body must be a JSON object.
//
// It also returns the usage the client's own stream_options asks for, read as vLLM reads it
// (protocol.py StreamOptions: include_usage defaults to true when stream_options is an object,
// continuous_usage_stats to false, and counts only with include_usage; the last occurrence of a
// duplicated key wins, keys match exactly): what the client must receive.
func forceStreamUsage(body []byte) (out []byte, include, continuous bool, err error) {
	out, err = rewriteStreamUsage(body)
	if err != nil {
		return nil, false, false, err
	}
	include, continuous = clientStreamUsage(body)
	return out, include, continuous, nil
}

// clientStreamUsage reads the top-level stream_options of body (a JSON object) as vLLM does.
func clientStreamUsage(body []byte) (include, continuous bool) {
	var top map[string]json.RawMessage // Go keeps the last duplicate, as Python does
	if json.Unmarshal(body, &top) != nil {
		return false, false
	}
	raw, ok := top["stream_options"]
	if !ok {
		return false, false
	}
	var opts map[string]json.RawMessage
	if json.Unmarshal(raw, &opts) != nil || opts == nil {
		return false, false // null (or not an object, which vLLM refuses)
	}
	flag := func(key string, def bool) bool {
		v, ok := opts[key]
		if !ok || string(v) == "null" {
			return def
		}
		var b bool
		return json.Unmarshal(v, &b) == nil && b
	}
	include = flag("include_usage", true)
	return include, include && flag("continuous_usage_stats", false)
}

func rewriteStreamUsage(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("gateway: request body is not a JSON object")
	}
	opening := dec.InputOffset() // just after '{'
	type span struct{ start, end int64 }
	var found []span
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("gateway: request body: %w", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("gateway: request body: %w", err)
		}
		if key, _ := tok.(string); key == "stream_options" {
			end := dec.InputOffset()
			found = append(found, span{end - int64(len(v)), end})
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("gateway: request body: %w", err)
	}
	closing := dec.InputOffset() - 1
	if len(found) == 0 {
		field := `"stream_options":{"include_usage":true,"continuous_usage_stats":true}`
		out := make([]byte, 0, len(body)+len(field)+1)
		out = append(out, body[:closing]...)
		if len(bytes.TrimSpace(body[opening:closing])) > 0 {
			out = append(out, ',')
		}
		out = append(out, field...)
		return append(out, body[closing:]...), nil
	}
	out := make([]byte, 0, len(body)+64)
	prev := int64(0)
	for _, s := range found {
		out = append(out, body[prev:s.start]...)
		out = append(out, rewriteStreamOptions(body[s.start:s.end])...)
		prev = s.end
	}
	return append(out, body[prev:]...), nil
}

func rewriteStreamOptions(v []byte) []byte {
	var opts map[string]json.RawMessage
	if json.Unmarshal(v, &opts) != nil || opts == nil { // null, or not an object
		return []byte(`{"include_usage":true,"continuous_usage_stats":true}`)
	}
	// Go's decoder matches field names case-insensitively and Python's does not: remove every
	// spelling, so that exactly one of each reaches the engine whichever decoder reads it.
	for k := range opts {
		if strings.EqualFold(k, "include_usage") || strings.EqualFold(k, "continuous_usage_stats") {
			delete(opts, k)
		}
	}
	opts["include_usage"] = json.RawMessage("true")
	opts["continuous_usage_stats"] = json.RawMessage("true")
	b, _ := json.Marshal(opts) // cannot fail: every value is valid JSON from the decoder
	return b
}

// parseEndpointServed splits the router's x-gateway-destination-endpoint-served value,
// "name" or "name;gpu=TYPE;adapter=LORA" (parameters separated by ";", unknown ones ignored),
// into the replica name, its GPU type and the LoRA adapter that served the request. Values are
// trimmed and cut to 128 bytes: they are stored.
func parseEndpointServed(v string) (endpoint, gpu, adapter string) {
	name, params, _ := strings.Cut(v, ";")
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		switch k = strings.TrimSpace(k); {
		case strings.EqualFold(k, "gpu"):
			gpu = strings.TrimSpace(val)
		case strings.EqualFold(k, "adapter"):
			adapter = strings.TrimSpace(val)
		}
	}
	return clip(strings.TrimSpace(name), 128), clip(gpu, 128), clip(adapter, 128)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// errUsageNotRecorded answers a non-streaming request whose usage record could not be made
// durable: the answer is withheld (nothing the client did not pay for leaves the gateway).
var errUsageNotRecorded = openai.Errorf(http.StatusServiceUnavailable, openai.TypeUnavailable, "usage_not_recorded",
	"The request could not be metered, so its answer was withheld. Retry it with a new X-Request-Id.")

// metered is one admitted request on its way back: it relays the answer and writes its usage.
type metered struct {
	g              *Gateway
	p              *principal
	path           string
	req            *openai.InferenceRequest
	requestID      string
	start          time.Time
	adm            *admission
	tk             *ticket // the admission to settle with the usage recorded
	stream         bool    // the client asked for a stream (and the engine was asked for usage)
	wantsUsage     bool    // the client itself asked for stream_options.include_usage
	wantsChunks    bool    // ... and for continuous_usage_stats (usage on every chunk)
	promptEstimate int64   // bytes/4 of the prompt, for records without engine usage
	body           []byte  // the client's request body as received, for the I/O log
	iolog          bool    // the tenant opted in to the I/O log

	endpoint, gpu, adapter string

	mu       sync.Mutex // serializes record: exactly one record per request
	recorded bool
	rec      *store.UsageRecord
	recErr   error
}

// relay answers the client with resp and meters it. Only an answer that comes from an engine is
// metered: one that names the replica that served it, or any 2xx (a next layer that is not the
// router sends no name). A router's own refusal (404, 503 without the header) is relayed
// unmetered and its token charge refunded.
func (m *metered) relay(ctx context.Context, w http.ResponseWriter, resp *http.Response) {
	served := resp.Header.Get(openai.HeaderEndpointServed)
	resp.Header.Del(openai.HeaderEndpointServed)
	m.endpoint, m.gpu, m.adapter = parseEndpointServed(served)
	if served == "" && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		m.tk.cancel(ctx)
		m.writeHeaders(w, resp)
		if err := openai.Relay(w, resp); err != nil {
			m.g.log.DebugContext(ctx, "gateway: relaying an error answer was cut", "err", err)
		}
		return
	}
	if m.stream && resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		m.relayStream(ctx, w, resp)
		return
	}
	m.relayBuffered(ctx, w, resp)
}

// writeHeaders copies the answer's headers to w and (re)sets the gateway's own on top.
func (m *metered) writeHeaders(w http.ResponseWriter, resp *http.Response) {
	h := w.Header()
	openai.CopyHeaders(h, resp.Header)
	m.adm.setHeaders(h)
	h.Set(openai.HeaderRequestID, m.requestID)
}

// relayBuffered relays a non-streaming answer. The body is read whole first and its usage record
// committed before the client receives any of it; when the record cannot be committed the client
// gets 503 usage_not_recorded instead of the answer.
func (m *metered) relayBuffered(ctx context.Context, w http.ResponseWriter, resp *http.Response) {
	ttft := m.g.clk.Since(m.start)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		// The engine ran the request but its answer was lost: meter the estimate, answer 502
		// (or the client's own cancellation).
		status := http.StatusBadGateway
		reason := store.BilledUpstreamError
		if ctx.Err() != nil {
			status, reason = openai.AsError(ctx.Err()).Status, store.BilledClientDisconnect
		}
		_ = m.record(ctx, status, nil, 0, ttft, reason)
		m.g.answerTransportError(ctx, w, err)
		m.finish(ctx, nil)
		return
	}
	var u *openai.Usage
	reason := store.BilledComplete
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		u = openai.UsageOf(body)
	} else {
		reason = store.BilledUpstreamError
	}
	if err := m.record(ctx, resp.StatusCode, u, 0, ttft, reason); err != nil {
		openai.WriteError(w, errUsageNotRecorded)
		return
	}
	m.writeHeaders(w, resp)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
	m.finish(ctx, body)
}

// relayStream relays an SSE stream (see relayEvents) and meters it. The usage record is committed
// before the client receives "data: [DONE]", or written when the stream ends without it (engine
// failure, client gone) with the last usage the engine reported (continuous usage: the tokens
// generated so far); without any usage block it is estimated from what was seen. When the record
// cannot be committed at [DONE], the response is aborted (http.ErrAbortHandler: the connection is
// cut, so the client sees a broken stream, never a clean end) and counted.
func (m *metered) relayStream(ctx context.Context, w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close() // also cancels the request below (router, engine) when the client left
	m.writeHeaders(w, resp)
	w.WriteHeader(resp.StatusCode)
	var ttft time.Duration
	opts := relayOpts{keepChunkUsage: m.wantsChunks, keepFinalUsage: m.wantsUsage, collectText: m.iolog}
	t, err := relayEvents(w, resp.Body, opts,
		func() { ttft = m.g.clk.Since(m.start) },
		func(t *tally) error {
			return m.record(ctx, resp.StatusCode, t.usage, t.chunks, ttft, store.BilledComplete)
		})
	if errors.Is(err, errNotDurable) {
		m.g.mm.streamsAborted.Inc()
		m.g.log.WarnContext(ctx, "gateway: stream aborted before [DONE]: its usage record is not durable", "request_id", m.requestID)
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		m.g.log.DebugContext(ctx, "gateway: stream cut short", "err", err)
	}
	// Ended without [DONE]: the client went away (a failed write, or its context), or the engine
	// cut the stream (EOF or a read error).
	reason := store.BilledUpstreamError
	if errors.Is(err, errClientGone) || ctx.Err() != nil {
		reason = store.BilledClientDisconnect
	}
	_ = m.record(ctx, resp.StatusCode, t.usage, t.chunks, ttft, reason)
	m.finish(ctx, t.text.Bytes())
}

// errClientGone marks a stream that ended because writing to the client failed.
var errClientGone = errors.New("gateway: writing to the client failed")

// errNotDurable marks a stream stopped before [DONE] because its usage record failed to commit.
var errNotDurable = errors.New("gateway: usage record not durable")

// tally is what a relayed stream showed about its usage.
type tally struct {
	usage  *openai.Usage // the last usage block seen; nil if none
	chunks int64         // events with choices: about one token each
	text   bytes.Buffer  // with relayOpts.collectText: the content and tool-call text
}

// relayOpts says which usage the client asked for (the rest is stripped) and what to collect.
type relayOpts struct {
	keepChunkUsage bool // keep the usage of content chunks (the client asked continuous_usage_stats)
	keepFinalUsage bool // keep the usage-only chunk (the client asked include_usage)
	collectText    bool // gather the streamed text into tally.text
}

// relayEvents copies the SSE events of body to w, each flushed at once and as the engine's exact
// bytes (Event.Raw), except the usage the client did not ask for: a usage-only chunk (empty
// choices) is dropped unless keepFinalUsage, and the "usage" member of other chunks is cut out
// unless keepChunkUsage, leaving every other byte of the event as it was (vLLM serializes a
// chunk without usage as the same JSON without that member, pydantic exclude_unset). It calls
// first when the first event arrives and done just before forwarding "data: [DONE]": an error
// from done stops the relay with errNotDurable before [DONE] is written. It returns the tally
// and the error that ended the stream early (reading the engine or writing the client), nil at
// EOF.
func relayEvents(w io.Writer, body io.Reader, o relayOpts, first func(), done func(*tally) error) (*tally, error) {
	flusher, _ := w.(http.Flusher)
	rd := openai.NewSSEReader(body)
	t := &tally{}
	for n := 0; ; n++ {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return t, nil
		}
		if err != nil {
			return t, err
		}
		if n == 0 {
			first()
		}
		raw := ev.Raw
		if ev.IsDone() {
			if err := done(t); err != nil {
				return t, fmt.Errorf("%w: %w", errNotDurable, err)
			}
		} else {
			c := inspectChunk(ev.Data)
			if c.usage != nil {
				t.usage = c.usage
			}
			if c.usageOnly {
				if !o.keepFinalUsage {
					continue
				}
			} else {
				t.chunks++
				if c.usage != nil && !o.keepChunkUsage {
					raw = cutUsage(ev, c)
				}
				if o.collectText {
					collectText(&t.text, ev.Data)
				}
			}
		}
		if _, err := w.Write(raw); err != nil {
			return t, fmt.Errorf("%w: %w", errClientGone, err)
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// usageKey is the cheap test that spares parsing the JSON of chunks without usage. Inside a JSON
// string a quote is escaped, so the bytes "usage" with bare quotes only occur as a key.
var usageKey = []byte(`"usage"`)

// chunkInfo is what inspectChunk found in one event's data.
type chunkInfo struct {
	usage     *openai.Usage // the top-level usage block (the last one, as Python keeps); nil if none or null
	usageOnly bool          // a usage block and no choices: the include_usage chunk
	stripped  []byte        // the data without its top-level usage member(s)
	verbatim  bool          // stripped is data with one span cut out, every other byte kept
}

// inspectChunk reads one stream event's data: its top-level usage block, whether it is a
// usage-only chunk, and the data without the usage member. With one usage member (the vLLM case)
// the member and one adjacent comma are cut out and every other byte is kept; with duplicated
// usage keys the object is rebuilt from its other members. Keys match exactly, as in the
// engine's Python decoder (Go's struct decoding would also take "Usage"). Data that is not
// exactly one JSON object has no usage.
func inspectChunk(data []byte) chunkInfo {
	if !bytes.Contains(data, usageKey) || !json.Valid(data) {
		return chunkInfo{}
	}
	if c, ok := inspectChunkFast(data); ok {
		return c
	}
	return inspectChunkDecoder(data)
}

// inspectChunkDecoder is inspectChunk's general path, for data that is valid JSON.
func inspectChunkDecoder(data []byte) chunkInfo {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return chunkInfo{}
	}
	type member struct {
		sepStart, start, end int // sepStart: just after the previous value (or '{')
		usage                bool
	}
	var members []member
	var usageRaw json.RawMessage
	hasChoices, usages := false, 0
	prevEnd := int(dec.InputOffset())
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return chunkInfo{}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return chunkInfo{}
		}
		end := int(dec.InputOffset())
		start := skipSpace(data, prevEnd)
		if start < len(data) && data[start] == ',' {
			start = skipSpace(data, start+1)
		}
		m := member{sepStart: prevEnd, start: start, end: end}
		switch key, _ := tok.(string); key {
		case "usage":
			usageRaw, m.usage = v, true
			usages++
		case "choices":
			var choices []json.RawMessage
			_ = json.Unmarshal(v, &choices) // absent, null or not a list: no choices
			hasChoices = len(choices) > 0
		}
		members = append(members, m)
		prevEnd = end
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return chunkInfo{}
	}
	if skipSpace(data, int(dec.InputOffset())) != len(data) || usages == 0 {
		return chunkInfo{} // not one JSON object (the engine's decoder would refuse it), or no usage
	}
	var c chunkInfo
	if json.Unmarshal(usageRaw, &c.usage) != nil || c.usage == nil {
		return chunkInfo{}
	}
	c.usageOnly = !hasChoices
	if usages == 1 {
		for i, m := range members {
			if !m.usage {
				continue
			}
			from, to := m.sepStart, m.end // the comma before it, the key, the value
			if i == 0 {
				// The first member: cut it and the comma after it (if another member follows).
				if k := skipSpace(data, m.end); k < len(data) && data[k] == ',' {
					to = k + 1
				}
			}
			c.stripped, c.verbatim = append(append(make([]byte, 0, len(data)), data[:from]...), data[to:]...), true
		}
		return c
	}
	b := []byte{'{'}
	for _, m := range members {
		if m.usage {
			continue
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, data[m.start:m.end]...)
	}
	c.stripped = append(b, '}')
	return c
}

// inspectChunkFast handles the shape vLLM sends, without the decoder's allocations (it cost ~100
// allocations per chunk, BenchmarkRelayEvents): data is a valid JSON object (checked by the
// caller) whose one top-level "usage" member is the last, written `,"usage":{...}}` with no
// whitespace. It scans the top level once, tracking strings and nesting, and reports ok=false
// for any other shape, which the general path then handles.
func inspectChunkFast(data []byte) (chunkInfo, bool) {
	const marker = `,"usage":`
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return chunkInfo{}, false
	}
	usageAt, usages, choices := -1, 0, -1
	depth, inString, expectKey := 0, false, false
	for i := 0; i < len(data); i++ {
		ch := data[i]
		if inString {
			switch ch {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch ch {
		case '"':
			if depth == 1 && expectKey {
				end := i + 1
				for ; end < len(data) && data[end] != '"'; end++ {
					if data[end] == '\\' {
						return chunkInfo{}, false // an escaped key: leave it to the decoder
					}
				}
				switch key := data[i+1 : end]; string(key) {
				case "usage":
					usages++
					if bytes.HasPrefix(data[i-1:], []byte(marker)) {
						usageAt = i - 1
					}
				case "choices":
					if bytes.HasPrefix(data[end+1:], []byte(":")) {
						choices = end + 2
					} else {
						return chunkInfo{}, false
					}
				}
			}
			expectKey, inString = false, true
		case '{', '[':
			depth++
			expectKey = ch == '{' && depth == 1
		case '}', ']':
			depth--
		case ',':
			expectKey = depth == 1
		}
	}
	if usages != 1 || usageAt < 0 {
		return chunkInfo{}, false
	}
	value := data[usageAt+len(marker) : len(data)-1]
	if !json.Valid(value) {
		return chunkInfo{}, false // the usage member is not the last one
	}
	var c chunkInfo
	if json.Unmarshal(value, &c.usage) != nil || c.usage == nil {
		return chunkInfo{}, true // null or not a usage object: no usage, as the general path says
	}
	hasChoices := false
	if choices >= 0 {
		j := skipSpace(data, choices)
		if j < len(data) && data[j] == '[' {
			hasChoices = data[skipSpace(data, j+1)] != ']'
		}
	}
	c.usageOnly = !hasChoices
	c.stripped, c.verbatim = append(append(make([]byte, 0, len(data)), data[:usageAt]...), '}'), true
	return c, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// cutUsage returns ev's bytes with its data replaced by c.stripped. A single-line event whose
// usage was cut verbatim keeps every other byte of Raw (the "data:" prefix, line ends); any other
// event is re-framed with one "data:" line per line of its data (which SSE joins back with "\n").
func cutUsage(ev *openai.Event, c chunkInfo) []byte {
	data := ev.Data
	if c.verbatim && !bytes.Contains(data, []byte("\n")) {
		if i := bytes.Index(ev.Raw, data); i >= 0 {
			out := make([]byte, 0, len(ev.Raw)-len(data)+len(c.stripped))
			out = append(out, ev.Raw[:i]...)
			out = append(out, c.stripped...)
			return append(out, ev.Raw[i+len(data):]...)
		}
	}
	out := make([]byte, 0, len(c.stripped)+16)
	for line := range bytes.SplitSeq(c.stripped, []byte("\n")) {
		out = append(out, "data: "...)
		out = append(out, line...)
		out = append(out, '\n')
	}
	return append(out, '\n')
}

// collectText appends a chunk's generated text (chat delta content and tool-call arguments, or
// completion text) to b, for the I/O log.
func collectText(b *bytes.Buffer, data []byte) {
	var c struct {
		Choices []struct {
			Text  string `json:"text"`
			Delta struct {
				Content   string `json:"content"`
				ToolCalls []struct {
					Function struct {
						Name      string `json:"name"`
						Arguments string `json:"arguments"`
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"delta"`
		} `json:"choices"`
	}
	if json.Unmarshal(data, &c) != nil {
		return
	}
	for _, ch := range c.Choices {
		b.WriteString(ch.Text)
		b.WriteString(ch.Delta.Content)
		for _, tc := range ch.Delta.ToolCalls {
			b.WriteString(tc.Function.Name)
			b.WriteString(tc.Function.Arguments)
		}
	}
}

// record writes the request's usage record once and waits for its commit; later calls (the
// completion path and the disconnect path racing) return the first call's result and write
// nothing. It settles the token limit with the tokens metered and counts them. With the
// engine's usage block the tokens are copied from it exactly; without one they are estimated:
// the prompt as bytes/4, the completion as one token per streamed chunk (0 for a non-streaming
// answer). A failed write is returned, logged at error level with the whole record (so no usage
// is lost silently) and counted.
func (m *metered) record(ctx context.Context, status int, u *openai.Usage, chunks int64, ttft time.Duration, reason string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recorded {
		return m.recErr
	}
	m.recorded = true
	now := m.g.clk.Now()
	rec := &store.UsageRecord{
		RequestID: m.requestID, TenantID: m.p.tenant.ID, KeyID: m.p.key.ID, Model: m.req.Model, Adapter: m.adapter,
		Endpoint: m.endpoint, GPU: m.gpu, TTFT: ttft, Duration: now.Sub(m.start), Status: status,
		Stream: m.stream, CreatedAt: now, BilledReason: reason,
	}
	if u != nil {
		rec.Source = store.UsageEngine
		rec.PromptTokens, rec.CachedTokens, rec.CompletionTokens = int64(u.PromptTokens), int64(u.CachedTokens()), int64(u.CompletionTokens)
	} else {
		rec.Source = store.UsageEstimated
		if status >= 200 && status <= 299 {
			rec.PromptTokens, rec.CompletionTokens = m.promptEstimate, chunks
		}
	}
	m.rec = rec
	m.g.m.tokens.WithLabelValues("prompt").Add(float64(rec.PromptTokens))
	m.g.m.tokens.WithLabelValues("cached").Add(float64(rec.CachedTokens))
	m.g.m.tokens.WithLabelValues("completion").Add(float64(rec.CompletionTokens))

	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.g.ledger.timeout)
	defer cancel()
	out, err := m.g.ledger.write(wctx, rec)
	// Settled after the ledger write: a budget loaded from the ledger meanwhile (Redis flushed, a
	// new month) then counts this record at most twice, never not at all.
	m.tk.settle(ctx, rec.PromptTokens, rec.CachedTokens, rec.CompletionTokens)
	if err == nil {
		m.g.recent.Add(m.requestID, struct{}{})
	}
	switch {
	case err != nil:
		m.recErr = err
		m.g.m.usageWriteErrors.Inc()
		m.g.log.ErrorContext(ctx, "gateway: usage record not written", "err", err,
			"request_id", rec.RequestID, "tenant_id", rec.TenantID, "key_id", rec.KeyID, "model", rec.Model, "adapter", rec.Adapter,
			"endpoint", rec.Endpoint, "gpu", rec.GPU, "prompt_tokens", rec.PromptTokens, "cached_tokens", rec.CachedTokens,
			"completion_tokens", rec.CompletionTokens, "ttft_ms", rec.TTFT.Milliseconds(), "duration_ms", rec.Duration.Milliseconds(),
			"status", rec.Status, "stream", rec.Stream, "usage_source", rec.Source, "created_at", rec.CreatedAt, "billed_reason", rec.BilledReason)
	case out.Rekeyed && out.Inserted:
		m.g.mm.rekeyed.Inc()
		m.g.log.WarnContext(ctx, "gateway: another request's usage record holds this request id; stored under a derived id",
			"request_id", rec.RequestID, "stored_id", out.StoredID, "tenant_id", rec.TenantID)
	case !out.Inserted:
		m.g.m.usageDuplicates.Inc()
		m.g.log.WarnContext(ctx, "gateway: this usage record was already stored; kept the first",
			"request_id", rec.RequestID, "tenant_id", rec.TenantID)
	}
	return m.recErr
}

// finish runs the hooks of a request whose record is final and whose answer was sent (contract
// C6): the tier's SLO histograms, and the I/O log when the tenant opted in. response is the
// non-streaming body or the streamed text.
func (m *metered) finish(ctx context.Context, response []byte) {
	m.mu.Lock()
	rec, err := m.rec, m.recErr
	m.mu.Unlock()
	if rec == nil || err != nil {
		return
	}
	m.g.slo.observe(m.p.policy.tier, rec.TTFT, rec.Duration, rec.Stream)
	if m.iolog {
		m.g.iolog.record(ctx, ioRecord{TenantID: rec.TenantID, KeyID: rec.KeyID, RequestID: rec.RequestID, Model: rec.Model,
			Request: m.body, Response: response, At: rec.CreatedAt})
	}
}
