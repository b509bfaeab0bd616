package platform

import (
	"context"
	"errors"
	"sync"

	"github.com/strata-inference/strata/internal/store"
)

// responseWriter stores new responses with group commit: concurrent saves share one
// transaction (store.PutResponses), so a burst of N responses costs one commit instead of N.
// On SQLite a commit, not the row, is most of a save's cost, and concurrent commits wait on the
// database lock with SQLite's sleeping busy handler; BenchmarkResponseCreateParallel measures
// it. A save returns when its own row is committed, never earlier, so a continuation
// (previous_response_id) that follows the answer always finds it.
//
// No goroutine of its own: the first saver of a burst leads and writes the queue (at most
// maxGroupCommit rows); when it is done it hands the lead to the first saver still waiting.
type responseWriter struct {
	st *store.Store

	mu    sync.Mutex
	queue []*pendingSave
	busy  bool // a leader is writing
}

// maxGroupCommit bounds the rows of one transaction.
const maxGroupCommit = 64

type pendingSave struct {
	rec  *store.ResponseRecord
	done chan error // the save's result, or errLead
}

// errLead tells a waiting saver that it leads the next group.
var errLead = errors.New("platform: lead the next group commit")

// put stores rec, grouped with the saves that arrive while another group is written. Errors:
// those of the store for this row (store.ErrExists for a duplicate id).
func (w *responseWriter) put(ctx context.Context, rec *store.ResponseRecord) error {
	me := &pendingSave{rec: rec, done: make(chan error, 1)}
	w.mu.Lock()
	w.queue = append(w.queue, me)
	lead := !w.busy
	w.busy = true
	w.mu.Unlock()
	if !lead {
		// Wait without ctx: the lead may be handed to this saver, and a leader must write.
		if err := <-me.done; err != errLead {
			return err
		}
	}
	w.mu.Lock()
	n := min(len(w.queue), maxGroupCommit)
	group := w.queue[:n:n]
	w.queue = w.queue[n:]
	w.mu.Unlock()

	// The group's rows belong to several requests: one client going away must not cancel the
	// others' commit.
	wctx := context.WithoutCancel(ctx)
	recs := make([]*store.ResponseRecord, len(group))
	for i, s := range group {
		recs[i] = s.rec
	}
	err := w.st.PutResponses(wctx, recs)
	for _, s := range group {
		if err != nil && len(group) > 1 {
			// Attribute the failure: each row alone (a duplicate id fails only its own save).
			s.done <- w.st.PutResponse(wctx, s.rec)
			continue
		}
		s.done <- err
	}

	w.mu.Lock()
	if len(w.queue) > 0 {
		w.queue[0].done <- errLead
	} else {
		w.busy = false
	}
	w.mu.Unlock()
	return <-me.done
}
