package platform

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/strata-inference/strata/internal/openai"
)

// Background responses (background: true): the request is answered at once with the stored
// response in status "queued"; the loop runs in a goroutine of this process and stores the
// final state (completed, incomplete, failed, or cancelled by POST /v1/responses/{id}/cancel).
// Clients poll GET /v1/responses/{id}. The run is not durable: a response whose process stops
// stays queued in the store, and a cancel that reaches another replica marks it cancelled there
// without stopping the run (which then overwrites it).

// statusQueued and statusCancelled are the background statuses of Response.status.
const (
	statusQueued    = "queued"
	statusCancelled = "cancelled"
)

// background tracks the runs of this process.
type background struct {
	mu     sync.Mutex
	runs   map[string]*bgRun // by response id
	closed bool
	wg     sync.WaitGroup
}

type bgRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Close cancels the background responses still running and waits for them to store their
// final state (cancelled), and for MCP sessions still closing. Later background requests are answered 503. Safe to call twice.
func (p *Platform) Close() {
	p.bg.mu.Lock()
	p.bg.closed = true
	for _, r := range p.bg.runs {
		r.cancel()
	}
	p.bg.mu.Unlock()
	p.bg.wg.Wait()
	p.mcpClosing.Wait()
}

// startBackground stores the queued response and starts its loop. Errors: 503 after Close,
// store errors.
func (p *Platform) startBackground(w http.ResponseWriter, r *http.Request, t *turn) {
	res := t.response(statusQueued)
	res.Background = true
	resJSON, err := json.Marshal(res)
	if err != nil {
		p.fail(w, err)
		return
	}
	p.bg.mu.Lock()
	if p.bg.closed {
		p.bg.mu.Unlock()
		p.fail(w, openai.Errorf(http.StatusServiceUnavailable, "server_error", "", "The server is shutting down; retry the request."))
		return
	}
	if err := p.save(r.Context(), t, nil, resJSON); err != nil {
		p.bg.mu.Unlock()
		p.fail(w, err)
		return
	}
	t.stored = true
	// The run outlives the request: its context keeps the request's values (none are needed
	// after the fact) but not its cancellation; the headers go along for the gateway.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	run := &bgRun{cancel: cancel, done: make(chan struct{})}
	if p.bg.runs == nil {
		p.bg.runs = map[string]*bgRun{}
	}
	p.bg.runs[t.id] = run
	p.bg.wg.Add(1)
	p.bg.mu.Unlock()

	rr := r.Clone(ctx)
	rr.Body, rr.ContentLength = http.NoBody, 0
	go func() {
		defer p.bg.wg.Done()
		defer close(run.done)
		defer cancel()
		p.runBackground(rr, t, res)
		p.bg.mu.Lock()
		delete(p.bg.runs, t.id)
		p.bg.mu.Unlock()
	}()
	writeJSON(w, resJSON)
}

// runBackground runs the loop of a background response and stores its final state.
func (p *Platform) runBackground(r *http.Request, t *turn, res *response) {
	res.Status = statusInProgress
	if b, err := json.Marshal(res); err == nil {
		if err := p.save(r.Context(), t, nil, b); err != nil && r.Context().Err() == nil {
			p.log.Warn("store background response", "id", t.id, "err", err)
		}
	}
	err := p.runLoop(r, t, res, nil)
	switch {
	case r.Context().Err() != nil:
		res.Status, res.CompletedAt, res.IncompleteDetails = statusCancelled, nil, nil
	case err != nil:
		e := openai.AsError(err)
		if e.Status == http.StatusInternalServerError {
			p.log.Error("background response failed", "err", err)
		}
		res.Status, res.CompletedAt, res.IncompleteDetails = statusFailed, nil, nil
		res.Error = &responseError{Code: failedCodeServer, Message: e.Message}
	}
	resJSON, err := json.Marshal(res)
	if err == nil {
		// Stored with a fresh context: a cancelled run still records that it was cancelled.
		err = p.save(context.WithoutCancel(r.Context()), t, res, resJSON)
	}
	if err != nil {
		p.log.Error("store background response", "id", t.id, "err", err)
	}
}

// cancelResponse answers POST /v1/responses/{id}/cancel: a background response still running
// here is stopped and answered cancelled; a finished one is answered as it is. Errors: 404 as
// GET; 400 for a response that was not created with background.
func (p *Platform) cancelResponse(w http.ResponseWriter, r *http.Request) {
	rec, err := p.owned(r)
	if err != nil {
		p.fail(w, err)
		return
	}
	var cur struct {
		Background bool `json:"background"`
	}
	if err := json.Unmarshal(rec.Response, &cur); err != nil {
		p.fail(w, err)
		return
	}
	if !cur.Background {
		p.fail(w, openai.InvalidRequest("", codeInvalidValue, "Cannot cancel a response that was not created with 'background': true."))
		return
	}
	p.bg.mu.Lock()
	run := p.bg.runs[rec.ID]
	p.bg.mu.Unlock()
	if run != nil {
		run.cancel()
		<-run.done
		if rec, err = p.owned(r); err != nil {
			p.fail(w, err)
			return
		}
	}
	writeJSON(w, rec.Response)
}
