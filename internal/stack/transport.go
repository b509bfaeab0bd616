package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/strata-inference/strata/internal/openai"
)

// handlerTransport is the in-memory RoundTripper that chains layers in one process: the next
// layer's handler serves the request directly, with no socket and no copy of the request body.
// The response body is a pipe the handler writes into, so a stream reaches the caller chunk by
// chunk as the handler flushes it. Closing the response body cancels the handler's context.
type handlerTransport struct {
	h   http.Handler
	log *slog.Logger
}

var _ http.RoundTripper = handlerTransport{}

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	in := req.Clone(ctx)
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = "in-memory"
	if in.Host == "" {
		in.Host = req.URL.Host
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{header: make(http.Header), pw: pw, ready: make(chan struct{})}

	go func() {
		defer func() {
			if p := recover(); p != nil {
				if !errors.Is(asError(p), http.ErrAbortHandler) {
					t.log.Error("panic in layer handler", "panic", p, "path", in.URL.Path)
				}
				if w.send(http.StatusInternalServerError, true) {
					pw.Close()
					return
				}
				pw.CloseWithError(fmt.Errorf("stack: handler aborted: %v", p))
				return
			}
			w.writeHeaderOnce(http.StatusOK)
			pw.Close()
		}()
		t.h.ServeHTTP(w, in)
	}()

	select {
	case <-w.ready:
	case <-ctx.Done():
		cancel()
		pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	resp := &http.Response{
		Status:        fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &cancelOnClose{ReadCloser: pr, cancel: cancel},
		ContentLength: -1,
		Request:       req,
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	if w.panicked {
		// The handler panicked before answering: answer as net/http would, without detail.
		body := openai.MarshalError(errors.New("panic"))
		resp.Header = http.Header{"Content-Type": {"application/json"}}
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		resp.ContentLength = int64(len(body))
		cancel()
	}
	return resp, nil
}

func asError(p any) error {
	if err, ok := p.(error); ok {
		return err
	}
	return nil
}

// pipeWriter is the http.ResponseWriter of a handler served by handlerTransport.
type pipeWriter struct {
	header   http.Header
	sent     http.Header // snapshot at WriteHeader, what the caller sees
	pw       *io.PipeWriter
	once     sync.Once
	ready    chan struct{}
	status   int
	panicked bool
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) { w.writeHeaderOnce(code) }

func (w *pipeWriter) writeHeaderOnce(code int) bool { return w.send(code, false) }

// send hands the status and headers to the caller once; it reports whether this call did so
// (false when they were already sent). panicked marks an answer to a handler panic.
func (w *pipeWriter) send(code int, panicked bool) bool {
	did := false
	w.once.Do(func() {
		w.panicked = panicked
		if code < 100 || code > 999 {
			code = http.StatusInternalServerError
		}
		did = true
		w.status = code
		w.sent = w.header.Clone()
		if w.sent == nil {
			w.sent = http.Header{}
		}
		close(w.ready)
	})
	return did
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.writeHeaderOnce(http.StatusOK)
	return w.pw.Write(b)
}

// Flush is a no-op: every Write already waits until the caller has read it.
func (w *pipeWriter) Flush() { w.writeHeaderOnce(http.StatusOK) }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// upstreamTransport sends a layer's requests to the next layer in another process: it rewrites
// the placeholder host of openai.NewUpstreamRequest to the upstream base URL.
type upstreamTransport struct {
	base *url.URL
	rt   http.RoundTripper
}

func (t upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme = t.base.Scheme
	out.URL.Host = t.base.Host
	out.URL.Path = strings.TrimSuffix(t.base.Path, "/") + req.URL.Path
	out.Host = ""
	return t.rt.RoundTrip(out)
}

// newHTTPTransport is the transport to engines and upstream layers: keep-alive pools sized for
// a proxy, no overall timeout (streams last as long as generation does).
func newHTTPTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.DisableCompression = true
	return t
}
