package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/strata-inference/strata/internal/store"
)

// DefaultActor is the actor Admin records in the audit log unless told otherwise (WithActor).
const DefaultActor = "cli"

// WithActor returns a copy of a that records actor (1 to 64 visible characters; the name of an
// operator or an admin token, never a secret) as the author of its actions in the audit log.
func (a *Admin) WithActor(actor string) *Admin {
	c := *a
	c.actor = actor
	return &c
}

// ErrNotAudited is wrapped by the error of an Admin action that happened but whose audit log entry
// could not be written (the action is not undone).
var ErrNotAudited = errors.New("not audited")

// audit appends one entry to the hash-chained audit log (store.AppendAudit). detail is encoded as
// JSON; it must not hold a secret. The action has already happened: an error here is returned
// so the caller knows the log missed it (the action is not undone).
func (a *Admin) audit(ctx context.Context, action, target string, detail any) error {
	b, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("gateway: audit detail: %w", err)
	}
	actor := a.actor
	if actor == "" {
		actor = DefaultActor
	}
	if err := a.st.AppendAudit(ctx, &store.AuditEntry{At: a.now(), Actor: actor, Action: action, Target: target, Detail: string(b)}); err != nil {
		return fmt.Errorf("gateway: %s done but %w: %w", action, ErrNotAudited, err)
	}
	return nil
}

// Audit returns the audit log, oldest first.
func (a *Admin) Audit(ctx context.Context) ([]store.AuditEntry, error) { return a.st.ListAudit(ctx) }

// VerifyAudit checks the audit log's hash chain: the number of entries verified, and an error
// wrapping store.ErrAuditBroken naming the first entry that was altered, removed or reordered.
func (a *Admin) VerifyAudit(ctx context.Context) (int, error) { return a.st.VerifyAudit(ctx) }
