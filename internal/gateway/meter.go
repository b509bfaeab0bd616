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
	"time"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// usageWriteTimeout bounds the write of one usage record. The write runs even when the client
// is gone (its context detached from the request's cancellation), so it needs its own bound.
const usageWriteTimeout = 10 * time.Second

// forceIncludeUsage returns a streaming request body with stream_options.include_usage set to
// true, so the engine ends the stream with a usage chunk (OpenAI API reference, "stream_options";
// vLLM serving_chat.py). Only the stream_options value is rewritten; every other byte of the
// body is kept. Inside stream_options other fields are kept, except that continuous_usage_stats
// is removed when the client did not ask for usage itself: vLLM honours it only together with
// include_usage, so forcing one on must not switch the other on behind the client's back.
// Every top-level occurrence of the key is rewritten (JSON decoders disagree on duplicates,
// Go's and Python's keep the last). body must be a JSON object.
func forceIncludeUsage(body []byte, clientAsked bool) ([]byte, error) {
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
		field := `"stream_options":{"include_usage":true}`
		out := make([]byte, 0, len(body)+len(field)+1)
		out = append(out, body[:closing]...)
		if len(bytes.TrimSpace(body[opening:closing])) > 0 {
			out = append(out, ',')
		}
		out = append(out, field...)
		return append(out, body[closing:]...), nil
	}
	out := make([]byte, 0, len(body)+32)
	prev := int64(0)
	for _, s := range found {
		out = append(out, body[prev:s.start]...)
		out = append(out, rewriteStreamOptions(body[s.start:s.end], clientAsked)...)
		prev = s.end
	}
	return append(out, body[prev:]...), nil
}

func rewriteStreamOptions(v []byte, clientAsked bool) []byte {
	var opts map[string]json.RawMessage
	if json.Unmarshal(v, &opts) != nil || opts == nil { // null, or not an object
		return []byte(`{"include_usage":true}`)
	}
	// Go's decoder matches field names case-insensitively and Python's does not: remove every
	// spelling, so that exactly one include_usage (and no continuous_usage_stats the client did
	// not effectively ask for) reaches the engine whichever decoder reads it.
	for k := range opts {
		if strings.EqualFold(k, "include_usage") || (!clientAsked && strings.EqualFold(k, "continuous_usage_stats")) {
			delete(opts, k)
		}
	}
	opts["include_usage"] = json.RawMessage("true")
	b, _ := json.Marshal(opts) // cannot fail: every value is valid JSON from the decoder
	return b
}

// parseEndpointServed splits the router's x-gateway-destination-endpoint-served value,
// "name" or "name;gpu=TYPE" (parameters separated by ";", unknown ones ignored), into the
// replica name and its GPU type. Values are trimmed and cut to 128 bytes: they are stored.
func parseEndpointServed(v string) (endpoint, gpu string) {
	name, params, _ := strings.Cut(v, ";")
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		if k, val, ok := strings.Cut(p, "="); ok && strings.EqualFold(strings.TrimSpace(k), "gpu") {
			gpu = strings.TrimSpace(val)
		}
	}
	return clip(strings.TrimSpace(name), 128), clip(gpu, 128)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

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
	promptEstimate int64   // bytes/4 of the prompt, for records without engine usage

	endpoint, gpu string
	recorded      bool
}

// relay answers the client with resp and meters it. Only an answer that comes from an engine is
// metered: one that names the replica that served it, or any 2xx (a next layer that is not the
// router sends no name). A router's own refusal (404, 503 without the header) is relayed
// unmetered and its token charge refunded.
func (m *metered) relay(ctx context.Context, w http.ResponseWriter, resp *http.Response) {
	served := resp.Header.Get(openai.HeaderEndpointServed)
	resp.Header.Del(openai.HeaderEndpointServed)
	m.endpoint, m.gpu = parseEndpointServed(served)
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

// relayBuffered relays a non-streaming answer. The body is read whole first, so its usage record
// is durable before the client receives any of it.
func (m *metered) relayBuffered(ctx context.Context, w http.ResponseWriter, resp *http.Response) {
	ttft := m.g.clk.Since(m.start)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		// The engine ran the request but its answer was lost: meter the estimate, answer 502
		// (or the client's own cancellation).
		status := http.StatusBadGateway
		if ctx.Err() != nil {
			status = openai.AsError(ctx.Err()).Status
		}
		reason := store.BilledUpstreamError
		if ctx.Err() != nil {
			reason = store.BilledClientDisconnect
		}
		m.record(ctx, status, nil, 0, ttft, reason)
		m.g.answerTransportError(ctx, w, err)
		return
	}
	var u *openai.Usage
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		u = openai.UsageOf(body)
	}
	reason := store.BilledComplete
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		reason = store.BilledUpstreamError
	}
	m.record(ctx, resp.StatusCode, u, 0, ttft, reason)
	m.writeHeaders(w, resp)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// relayStream relays an SSE stream (see relayEvents) and meters it. The usage record is written
// before the client receives "data: [DONE]", or when the stream ends without it (engine
// failure, client gone); without a usage block it is estimated from what was seen.
func (m *metered) relayStream(ctx context.Context, w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	m.writeHeaders(w, resp)
	w.WriteHeader(resp.StatusCode)
	var ttft time.Duration
	t, err := relayEvents(w, resp.Body, !m.wantsUsage,
		func() { ttft = m.g.clk.Since(m.start) },
		func(t *tally) { m.record(ctx, resp.StatusCode, t.usage, t.chunks, ttft, store.BilledComplete) })
	if err != nil {
		m.g.log.DebugContext(ctx, "gateway: stream cut short", "err", err)
	}
	// Ended without [DONE]: the client went away (a failed write, or its context), or the engine
	// cut the stream (EOF or a read error).
	reason := store.BilledUpstreamError
	if errors.Is(err, errClientGone) || ctx.Err() != nil {
		reason = store.BilledClientDisconnect
	}
	m.record(ctx, resp.StatusCode, t.usage, t.chunks, ttft, reason)
}

// errClientGone marks a stream that ended because writing to the client failed.
var errClientGone = errors.New("gateway: writing to the client failed")

// tally is what a relayed stream showed about its usage.
type tally struct {
	usage  *openai.Usage // the last usage block seen; nil if none
	chunks int64         // events with choices: about one token each
}

// relayEvents copies the SSE events of body to w, each as the engine's exact bytes (Event.Raw)
// and flushed at once, except usage-only chunks (empty choices and a usage block) when
// dropUsageOnly: the chunk the gateway forced on, which the client did not ask for. It calls
// first when the first event arrives and done just before forwarding "data: [DONE]", so the
// caller can make the usage durable before the client sees the end. It returns the tally and
// the error that ended the stream early (reading the engine or writing the client), nil at EOF.
func relayEvents(w io.Writer, body io.Reader, dropUsageOnly bool, first func(), done func(*tally)) (*tally, error) {
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
		if ev.IsDone() {
			done(t)
		} else {
			u, usageOnly := chunkUsage(ev.Data)
			if u != nil {
				t.usage = u
			}
			if !usageOnly {
				t.chunks++
			} else if dropUsageOnly {
				continue
			}
		}
		if _, err := w.Write(ev.Raw); err != nil {
			return t, fmt.Errorf("%w: %w", errClientGone, err)
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// usageKey is the cheap test that spares parsing the JSON of chunks without usage.
var usageKey = []byte(`"usage"`)

// chunkUsage reads one stream event's data: its usage block (nil if none or null) and whether it
// is a usage-only chunk (no choices), the chunk include_usage adds at the end of a stream. Keys
// match exactly, as in the engine's Python decoder (Go's struct decoding would also take "Usage").
func chunkUsage(data []byte) (*openai.Usage, bool) {
	if !bytes.Contains(data, usageKey) {
		return nil, false
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(data, &c) != nil {
		return nil, false
	}
	var u *openai.Usage
	if json.Unmarshal(c["usage"], &u) != nil || u == nil {
		return nil, false
	}
	var choices []json.RawMessage
	_ = json.Unmarshal(c["choices"], &choices) // absent, null or not a list: no choices
	return u, len(choices) == 0
}

// record writes the request's usage record once (later calls are no-ops), settles the token
// limit with the tokens metered, and counts them. With the engine's usage block the tokens are
// copied from it exactly; without one they are estimated: the prompt as bytes/4, the completion
// as one token per streamed chunk (0 for a non-streaming answer). A failed write is logged at
// error level with the whole record, so no usage is lost silently, and counted.
func (m *metered) record(ctx context.Context, status int, u *openai.Usage, chunks int64, ttft time.Duration, reason string) {
	if m.recorded {
		return
	}
	m.recorded = true
	now := m.g.clk.Now()
	rec := &store.UsageRecord{
		RequestID: m.requestID, TenantID: m.p.tenant.ID, KeyID: m.p.key.ID, Model: m.req.Model,
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
	m.g.m.tokens.WithLabelValues("prompt").Add(float64(rec.PromptTokens))
	m.g.m.tokens.WithLabelValues("cached").Add(float64(rec.CachedTokens))
	m.g.m.tokens.WithLabelValues("completion").Add(float64(rec.CompletionTokens))

	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), usageWriteTimeout)
	defer cancel()
	inserted, err := m.g.st.InsertUsage(wctx, rec)
	// Settled after the ledger write: a budget loaded from the ledger meanwhile (Redis flushed, a
	// new month) then counts this record at most twice, never not at all.
	m.tk.settle(ctx, rec.PromptTokens, rec.CachedTokens, rec.CompletionTokens)
	switch {
	case err != nil:
		m.g.m.usageWriteErrors.Inc()
		m.g.log.ErrorContext(ctx, "gateway: usage record not written", "err", err,
			"request_id", rec.RequestID, "tenant_id", rec.TenantID, "key_id", rec.KeyID, "model", rec.Model,
			"endpoint", rec.Endpoint, "gpu", rec.GPU, "prompt_tokens", rec.PromptTokens, "cached_tokens", rec.CachedTokens,
			"completion_tokens", rec.CompletionTokens, "ttft_ms", rec.TTFT.Milliseconds(), "duration_ms", rec.Duration.Milliseconds(),
			"status", rec.Status, "stream", rec.Stream, "usage_source", rec.Source, "created_at", rec.CreatedAt, "billed_reason", rec.BilledReason)
	case !inserted:
		m.g.m.usageDuplicates.Inc()
		m.g.log.WarnContext(ctx, "gateway: a usage record for this request id exists; kept the first",
			"request_id", rec.RequestID, "tenant_id", rec.TenantID)
	}
}
