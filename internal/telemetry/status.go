package telemetry

import "net/http"

// StatusWriter wraps an http.ResponseWriter to remember the status answered, for the layers'
// requests_total{code} counters. Flush passes through so streams still reach the client chunk by
// chunk, and Unwrap lets http.ResponseController reach the underlying writer.
type StatusWriter struct {
	http.ResponseWriter
	code int
}

// Status is the status written so far: 200 when the handler wrote a body or nothing at all.
func (w *StatusWriter) Status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// WriteHeader records the first status and passes it on.
func (w *StatusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implies status 200 when no status was written.
func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush flushes the underlying writer if it can.
func (w *StatusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.code == 0 {
			w.code = http.StatusOK
		}
		f.Flush()
	}
}

// Unwrap returns the underlying writer.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
