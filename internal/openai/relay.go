package openai

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// hopHeaders are the hop-by-hop headers of RFC 9110 §7.6.1, never forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// CopyHeaders copies src into dst, leaving out hop-by-hop headers and Content-Length (the body
// may be rewritten; net/http recomputes it).
func CopyHeaders(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
	dst.Del("Content-Length")
}

// NewUpstreamRequest builds the request a layer sends to the layer below: same method, path,
// query, headers (hop-by-hop removed) and context as in, with body as the new body. The URL host
// is the placeholder "upstream"; the RoundTripper of the next layer decides where it goes.
func NewUpstreamRequest(in *http.Request, body io.Reader, contentLength int64) *http.Request {
	out := in.Clone(in.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = "upstream"
	out.Host = ""
	out.Header = make(http.Header, len(in.Header))
	CopyHeaders(out.Header, in.Header)
	if body == nil {
		body = http.NoBody
	}
	out.Body = io.NopCloser(body)
	out.ContentLength = contentLength
	return out
}

// relayBufs holds Relay's 32 KiB copy buffers: allocating (and zeroing) one per request was
// most of the bytes and GC time of a pass-through (BenchmarkPassThrough in internal/platform).
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Relay writes resp to w: headers (hop-by-hop removed), status, then the body, flushing after
// every read so a stream reaches the client chunk by chunk. It closes resp.Body. An error after
// the status was written can only cut the body short; it is returned for logging.
func Relay(w http.ResponseWriter, resp *http.Response) error {
	defer resp.Body.Close()
	CopyHeaders(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
