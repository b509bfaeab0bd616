package sim

import (
	"errors"
	"hash/fnv"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

// Fault injection (config.Sim.Faults). Each inference request (POST /v1/chat/completions,
// /v1/completions, /v1/embeddings) gets an arrival ordinal n; its faults are decided by
// faultDraw(seed, replica name, n, kind), so the same seed, replica and arrival order give the
// same faults. Kinds are drawn independently, in this order: error, hang, reset.
const (
	faultKindError = 1
	faultKindHang  = 2
	faultKindReset = 3
	// faultKindStatus picks 500 or 503 for an error.
	faultKindStatus = 4
)

// Errors of injected faults, in vLLM's ErrorResponse shape. 500 is what vLLM answers when the
// engine core died under a request (EngineDeadError, vllm/v1/engine/exceptions.py); 503 is what
// an overloaded or restarting server answers.
var (
	errFaultInternal = vllmError(http.StatusInternalServerError, "InternalServerError", "",
		"EngineCore encountered an issue. See stack trace (above) for the root cause.")
	errFaultUnavailable = vllmError(http.StatusServiceUnavailable, "ServiceUnavailableError", "",
		"The server is temporarily unable to handle the request.")
	errColdStart = vllmError(http.StatusServiceUnavailable, "ServiceUnavailableError", "",
		"The engine is starting.")
)

// errStreamReset is returned by a resetWriter's Write once the stream is cut.
var errStreamReset = errors.New("sim: stream reset by fault injection")

// faults is a replica's fault injector. The zero rates inject nothing.
type faults struct {
	cfg       config.SimFaults
	salt      uint64        // from the seed and the replica name
	coldUntil time.Time     // /health answers 503 before this instant on the clock
	n         atomic.Uint64 // arrival ordinal of the next inference request
}

func newFaults(cfg config.SimFaults, seed int64, name string, start time.Time) *faults {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return &faults{cfg: cfg, salt: uint64(seed) ^ h.Sum64(), coldUntil: start.Add(cfg.ColdStart.D())}
}

// faultDraw is a uniform number in [0, 1) determined by salt, the request ordinal n and kind
// (splitmix64 finaliser over the mixed inputs).
func faultDraw(salt, n uint64, kind uint64) float64 {
	x := salt ^ (n * 0x9E3779B97F4A7C15) ^ (kind * 0xD1B54A32D192ED03)
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// faultPlan is what happens to one inference request.
type faultPlan struct {
	err   *openai.Error // answer at once with this error
	hang  bool          // never answer
	reset bool          // cut the stream after cfg.ResetAfter events
}

// plan draws the faults of the next inference request.
func (f *faults) plan() faultPlan {
	if f.cfg.ErrorRate == 0 && f.cfg.HangRate == 0 && f.cfg.ResetRate == 0 {
		return faultPlan{}
	}
	n := f.n.Add(1) - 1
	switch {
	case faultDraw(f.salt, n, faultKindError) < f.cfg.ErrorRate:
		if faultDraw(f.salt, n, faultKindStatus) < 0.5 {
			return faultPlan{err: errFaultInternal}
		}
		return faultPlan{err: errFaultUnavailable}
	case faultDraw(f.salt, n, faultKindHang) < f.cfg.HangRate:
		return faultPlan{hang: true}
	}
	return faultPlan{reset: faultDraw(f.salt, n, faultKindReset) < f.cfg.ResetRate}
}

// cold reports whether the replica is still in its configured cold start at now.
func (f *faults) cold(now time.Time) bool { return now.Before(f.coldUntil) }

// isInference reports whether r is subject to the error, hang and reset faults.
func isInference(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	switch r.URL.Path {
	case openai.PathChatCompletions, openai.PathCompletions, openai.PathEmbeddings:
		return true
	}
	return false
}

// serveFaults applies the cold start and the drawn faults of r. It returns true when it
// handled r (the caller must not serve it), and w to serve it with otherwise (a resetWriter
// when the stream is to be cut; the caller checks its dropped field afterwards).
func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *resetWriter, bool) {
	if s.faults.cold(s.clk.Now()) && r.URL.Path != "/metrics" {
		s.simStats.faults.WithLabelValues("cold_start").Inc()
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusServiceUnavailable)
		} else {
			openai.WriteError(w, errColdStart)
		}
		return w, nil, true
	}
	if !isInference(r) {
		return w, nil, false
	}
	p := s.faults.plan()
	switch {
	case p.err != nil:
		s.simStats.faults.WithLabelValues("error").Inc()
		openai.WriteError(w, p.err)
		return w, nil, true
	case p.hang:
		s.simStats.faults.WithLabelValues("hang").Inc()
		select {
		case <-r.Context().Done():
		case <-s.done:
			openai.WriteError(w, errEngineClosed) // the replica stopped: as any request it held
		}
		return w, nil, true
	case p.reset:
		rw := &resetWriter{ResponseWriter: w, after: s.cfg.Faults.ResetAfter}
		return rw, rw, false
	}
	return w, nil, false
}

// resetWriter passes a response through until it has written `after` events of an event
// stream, then drops every further write (returning errStreamReset, so the handler aborts its
// sequences and returns). ServeHTTP then cuts the connection with panic(http.ErrAbortHandler):
// the client sees the body end without the last chunk (HTTP/1.1) or a stream reset (HTTP/2).
// Responses that are not event streams pass through unchanged.
type resetWriter struct {
	http.ResponseWriter
	after  int
	stream bool // the response is text/event-stream
	events int
	cut    bool // further writes are refused
	// dropped is set when a write was refused: the stream was really cut short.
	dropped bool
}

func (w *resetWriter) WriteHeader(code int) {
	w.stream = w.Header().Get("Content-Type") == "text/event-stream"
	if w.stream && w.after == 0 {
		w.ResponseWriter.WriteHeader(code)
		w.Flush()
		w.cut = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write counts one event per call (openai.SSEWriter writes each event in one call).
func (w *resetWriter) Write(b []byte) (int, error) {
	if w.cut {
		w.dropped = true
		return 0, errStreamReset
	}
	if !w.stream {
		return w.ResponseWriter.Write(b)
	}
	n, err := w.ResponseWriter.Write(b)
	w.events++
	if w.events >= w.after {
		w.Flush()
		w.cut = true
	}
	return n, err
}

// Flush flushes the underlying writer.
func (w *resetWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *resetWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// validFraction reports whether v is a rate in [0, 1].
func validFraction(v float64) bool { return !math.IsNaN(v) && v >= 0 && v <= 1 }
