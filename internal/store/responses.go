package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ResponseRecord is one stored Responses API object (internal/platform). The JSON fields are
// opaque to the store: their shapes belong to the platform.
type ResponseRecord struct {
	// ID is the response id ("resp_...").
	ID string
	// Owner scopes the record: only a caller presenting the same owner token can read or delete
	// it. The platform sets it (today a SHA-256 of the API key; issue 6 a tenant id).
	Owner string
	// PreviousResponseID is the response this one continues, "" for the first of a chain.
	PreviousResponseID string
	// SessionID is the id of the first response of the previous_response_id chain: the
	// KV-affinity hint sent to the router with every turn of the conversation.
	SessionID string
	// Model is the model the response was created with.
	Model string
	// CreatedAt is the creation time (stored with millisecond precision).
	CreatedAt time.Time
	// Response is the Response object as returned to the client.
	Response json.RawMessage
	// InputItems is the JSON array of input items of the whole conversation up to this
	// response (previous inputs and outputs, then this request's input).
	InputItems json.RawMessage
	// Messages is the JSON array of chat messages of the whole conversation, including this
	// response's output, without the instructions (they are not carried over).
	Messages json.RawMessage
}

// PutResponse inserts rec. Errors: ErrExists if a response with the same id exists.
func (s *Store) PutResponse(ctx context.Context, rec *ResponseRecord) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO responses
		(id, owner, previous_response_id, session_id, model, created_at, response, input_items, messages)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		rec.ID, rec.Owner, rec.PreviousResponseID, rec.SessionID, rec.Model, rec.CreatedAt.UnixMilli(),
		string(rec.Response), string(rec.InputItems), string(rec.Messages))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: response %s: %w", rec.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: put response: %w", err)
	}
	return nil
}

// PutResponses inserts recs in one transaction (one commit: what a group commit of concurrent
// responses costs once). Errors: ErrExists (naming the id) if any id exists, and then nothing
// is inserted.
func (s *Store) PutResponses(ctx context.Context, recs []*ResponseRecord) error {
	return s.platformTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO responses
			(id, owner, previous_response_id, session_id, model, created_at, response, input_items, messages)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`))
		if err != nil {
			return fmt.Errorf("store: put responses: %w", err)
		}
		defer stmt.Close()
		for _, rec := range recs {
			_, err := stmt.ExecContext(ctx, rec.ID, rec.Owner, rec.PreviousResponseID, rec.SessionID, rec.Model,
				rec.CreatedAt.UnixMilli(), string(rec.Response), string(rec.InputItems), string(rec.Messages))
			if isUniqueViolation(err) {
				return fmt.Errorf("store: response %s: %w", rec.ID, ErrExists)
			}
			if err != nil {
				return fmt.Errorf("store: put responses: %w", err)
			}
		}
		return nil
	})
}

// GetResponse returns the response id owned by owner. Errors: ErrNotFound if it does not exist
// or belongs to another owner (the two are indistinguishable by design).
func (s *Store) GetResponse(ctx context.Context, owner, id string) (*ResponseRecord, error) {
	var (
		rec                            ResponseRecord
		created                        int64
		response, inputItems, messages string
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, owner, previous_response_id, session_id, model,
		created_at, response, input_items, messages FROM responses WHERE id = ? AND owner = ?`), id, owner).
		Scan(&rec.ID, &rec.Owner, &rec.PreviousResponseID, &rec.SessionID, &rec.Model, &created,
			&response, &inputItems, &messages)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: response %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get response: %w", err)
	}
	rec.CreatedAt = time.UnixMilli(created).UTC()
	rec.Response = json.RawMessage(response)
	rec.InputItems = json.RawMessage(inputItems)
	rec.Messages = json.RawMessage(messages)
	return &rec, nil
}

// DeleteResponse deletes the response id owned by owner. Responses that continue it keep
// working: each carries its own copy of the conversation. Errors: ErrNotFound as GetResponse.
func (s *Store) DeleteResponse(ctx context.Context, owner, id string) error {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM responses WHERE id = ? AND owner = ?`), id, owner)
	if err != nil {
		return fmt.Errorf("store: delete response: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: delete response: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("store: response %s: %w", id, ErrNotFound)
	}
	return nil
}

// UpdateResponse replaces the Response, InputItems and Messages of the stored response
// rec.ID owned by rec.Owner: a background response moving from queued to its final state.
// Errors: ErrNotFound as GetResponse.
func (s *Store) UpdateResponse(ctx context.Context, rec *ResponseRecord) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE responses SET response = ?, input_items = ?, messages = ?
		WHERE id = ? AND owner = ?`), string(rec.Response), string(rec.InputItems), string(rec.Messages), rec.ID, rec.Owner)
	if err != nil {
		return fmt.Errorf("store: update response: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errors.Join(fmt.Errorf("store: response %s: %w", rec.ID, ErrNotFound), err)
	}
	return nil
}

// ownedTables are the platform's tables with an owner column: AdoptOwner moves their rows.
var ownedTables = []string{"responses", "conversations", "files", "vector_stores"}

// AdoptOwner gives every platform object owned by from (responses, conversations, files,
// vector stores) to to, in one transaction, and returns how many objects moved. The platform
// calls it when it first learns the tenant of an API key: objects stored under the key's
// SHA-256, from before the platform asked the gateway for tenant identities (contract C5),
// then belong to the key's tenant. Idempotent; each UPDATE uses the table's owner index.
func (s *Store) AdoptOwner(ctx context.Context, from, to string) (int64, error) {
	var n int64
	err := s.platformTx(ctx, func(tx *sql.Tx) error {
		for _, table := range ownedTables {
			res, err := tx.ExecContext(ctx, s.q(`UPDATE `+table+` SET owner = ? WHERE owner = ?`), to, from)
			if err != nil {
				return fmt.Errorf("store: adopt %s: %w", table, err)
			}
			k, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("store: adopt %s: %w", table, err)
			}
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
