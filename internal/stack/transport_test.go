package stack

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newReq(t *testing.T, ctx context.Context, body string) *http.Request {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://upstream/v1/chat/completions?x=1", strings.NewReader(body))
	require.NoError(t, err)
	return req
}

func TestHandlerTransportPassesRequestAndResponse(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		require.Equal(t, "/v1/chat/completions", r.URL.Path)
		require.Equal(t, "x=1", r.URL.RawQuery)
		require.Equal(t, "/v1/chat/completions?x=1", r.RequestURI)
		w.Header().Set("X-Echo", string(b))
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusTeapot)
		w.Header().Set("X-Late", "ignored") // after WriteHeader: not sent, as with net/http
		_, _ = w.Write([]byte("ok"))
	})
	resp, err := handlerTransport{h: h, log: slog.Default()}.RoundTrip(newReq(t, context.Background(), "ping"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusTeapot, resp.StatusCode)
	require.Equal(t, "ping", resp.Header.Get("X-Echo"))
	require.Empty(t, resp.Header.Get("X-Late"))
	require.Equal(t, int64(2), resp.ContentLength)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "ok", string(b))
}

// A stream reaches the caller event by event: the caller reads the first event while the
// handler is still blocked before writing the second.
func TestHandlerTransportStreamsChunkByChunk(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte("data: 1\n\n"))
		w.(http.Flusher).Flush()
		<-release
		_, _ = w.Write([]byte("data: 2\n\n"))
	})
	resp, err := handlerTransport{h: h, log: slog.Default()}.RoundTrip(newReq(t, context.Background(), ""))
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "data: 1\n", line)
	close(release)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "\ndata: 2\n\n", string(rest))
}

func TestHandlerTransportPanicIsA500WithoutDetail(t *testing.T) {
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("secret detail") })
	resp, err := handlerTransport{h: h, log: slog.New(slog.NewTextHandler(io.Discard, nil))}.RoundTrip(newReq(t, context.Background(), ""))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 500, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	require.NotContains(t, string(b), "secret")
	require.Contains(t, string(b), `"type":"server_error"`)
}

func TestHandlerTransportCloseCancelsHandler(t *testing.T) {
	cancelled := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		<-r.Context().Done()
		close(cancelled)
	})
	resp, err := handlerTransport{h: h, log: slog.Default()}.RoundTrip(newReq(t, context.Background(), ""))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the body did not cancel the handler's context")
	}
}

func TestHandlerTransportCallerCancelsBeforeHeaders(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	_, err := handlerTransport{h: h, log: slog.Default()}.RoundTrip(newReq(t, ctx, ""))
	require.ErrorIs(t, err, context.Canceled)
}

func TestUpstreamTransportRewritesHost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.URL.Path))
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL + "/prefix/")
	resp, err := upstreamTransport{base: base, rt: newHTTPTransport()}.RoundTrip(newReq(t, context.Background(), ""))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, "/prefix/v1/chat/completions", string(b))
}

func TestRequestID(t *testing.T) {
	require.True(t, validRequestID("req_0123-abc.def:9"))
	require.False(t, validRequestID(""))
	require.False(t, validRequestID("has space"))
	require.False(t, validRequestID(strings.Repeat("a", 129)))
	id := newRequestID()
	require.True(t, validRequestID(id))
	require.Len(t, id, 36)
	require.NotEqual(t, id, newRequestID())
}

func BenchmarkHandlerTransport(b *testing.B) {
	body := strings.Repeat("x", 4096)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(body))
	})
	tr := handlerTransport{h: h, log: slog.Default()}
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, "http://upstream/v1/completions", strings.NewReader(body))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
