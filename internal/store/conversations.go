package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Conversation is one stored conversation of the OpenAI Conversations API (internal/platform).
type Conversation struct {
	// ID is the conversation id ("conv_...").
	ID string
	// Owner scopes the conversation as ResponseRecord.Owner does; its items share it.
	Owner string
	// CreatedAt is the creation time (stored with millisecond precision).
	CreatedAt time.Time
	// Metadata is the JSON object of string pairs, opaque to the store.
	Metadata json.RawMessage
}

// ConversationItem is one item of a conversation: a message, a function call, its output, ...
type ConversationItem struct {
	// ID is the item's id, unique within its conversation.
	ID string
	// Seq orders the items of a conversation, from 1; set by the store on append.
	Seq int64
	// CreatedAt is when the item was appended (millisecond precision).
	CreatedAt time.Time
	// Item is the item as the API lists it (JSON), opaque to the store.
	Item json.RawMessage
}

// ItemPage selects a page of conversation items.
type ItemPage struct {
	// After is the id of the item the page starts after ("" = from the first in Order).
	After string
	// Desc lists newest first.
	Desc bool
	// Limit is the page size (at least 1).
	Limit int
}

// CreateConversation inserts c with its initial items (seq 1..n, in order), in one
// transaction. Errors: ErrExists when the id, or an item id within it, is taken.
func (s *Store) CreateConversation(ctx context.Context, c *Conversation, items []ConversationItem) error {
	return s.platformTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO conversations (id, owner, created_at, metadata, next_seq)
			VALUES (?, ?, ?, ?, ?)`), c.ID, c.Owner, c.CreatedAt.UnixMilli(), string(c.Metadata), len(items))
		if isUniqueViolation(err) {
			return fmt.Errorf("store: conversation %s: %w", c.ID, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("store: create conversation: %w", err)
		}
		for i := range items {
			items[i].Seq = int64(i + 1)
		}
		return s.insertItems(ctx, tx, c.ID, items)
	})
}

func (s *Store) insertItems(ctx context.Context, tx *sql.Tx, conv string, items []ConversationItem) error {
	for _, it := range items {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO conversation_items (conversation_id, seq, id, created_at, item)
			VALUES (?, ?, ?, ?, ?)`), conv, it.Seq, it.ID, it.CreatedAt.UnixMilli(), string(it.Item))
		if isUniqueViolation(err) {
			return fmt.Errorf("store: conversation item %s: %w", it.ID, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("store: insert conversation item: %w", err)
		}
	}
	return nil
}

// GetConversation returns the conversation id owned by owner. Errors: ErrNotFound if it does
// not exist or belongs to another owner (indistinguishable by design).
func (s *Store) GetConversation(ctx context.Context, owner, id string) (*Conversation, error) {
	var (
		c       Conversation
		created int64
		meta    string
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, owner, created_at, metadata FROM conversations
		WHERE id = ? AND owner = ?`), id, owner).Scan(&c.ID, &c.Owner, &created, &meta)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: conversation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get conversation: %w", err)
	}
	c.CreatedAt, c.Metadata = time.UnixMilli(created).UTC(), json.RawMessage(meta)
	return &c, nil
}

// UpdateConversationMetadata replaces the metadata of a conversation and returns it.
// Errors: ErrNotFound as GetConversation.
func (s *Store) UpdateConversationMetadata(ctx context.Context, owner, id string, metadata json.RawMessage) (*Conversation, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE conversations SET metadata = ? WHERE id = ? AND owner = ?`),
		string(metadata), id, owner)
	if err != nil {
		return nil, fmt.Errorf("store: update conversation: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return nil, errors.Join(fmt.Errorf("store: conversation %s: %w", id, ErrNotFound), err)
	}
	return s.GetConversation(ctx, owner, id)
}

// DeleteConversation deletes a conversation and its items. Errors: ErrNotFound as
// GetConversation.
func (s *Store) DeleteConversation(ctx context.Context, owner, id string) error {
	return s.platformTx(ctx, func(tx *sql.Tx) error {
		// Items first: the cascade would do it, but not every SQLite connection has
		// foreign keys on (the pragma is per connection).
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM conversation_items WHERE conversation_id IN
			(SELECT id FROM conversations WHERE id = ? AND owner = ?)`), id, owner); err != nil {
			return fmt.Errorf("store: delete conversation items: %w", err)
		}
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM conversations WHERE id = ? AND owner = ?`), id, owner)
		if err != nil {
			return fmt.Errorf("store: delete conversation: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("store: conversation %s: %w", id, ErrNotFound), err)
		}
		return nil
	})
}

// AppendConversationItems appends items, in order, to the conversation id owned by owner,
// setting their Seq. Errors: ErrNotFound as GetConversation; ErrExists when an item id is
// already in the conversation (nothing is appended then).
func (s *Store) AppendConversationItems(ctx context.Context, owner, id string, items []ConversationItem) error {
	return s.platformTx(ctx, func(tx *sql.Tx) error {
		var next int64
		err := tx.QueryRowContext(ctx, s.q(`UPDATE conversations SET next_seq = next_seq + ?
			WHERE id = ? AND owner = ? RETURNING next_seq`), len(items), id, owner).Scan(&next)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: conversation %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: append conversation items: %w", err)
		}
		first := next - int64(len(items)) + 1
		for i := range items {
			items[i].Seq = first + int64(i)
		}
		return s.insertItems(ctx, tx, id, items)
	})
}

// ListConversationItems returns a page of the conversation's items and whether more follow.
// Errors: ErrNotFound when the conversation does not exist for owner, or when page.After
// names no item of it.
func (s *Store) ListConversationItems(ctx context.Context, owner, id string, page ItemPage) ([]ConversationItem, bool, error) {
	if _, err := s.GetConversation(ctx, owner, id); err != nil {
		return nil, false, err
	}
	cmp, order := ">", "ASC"
	if page.Desc {
		cmp, order = "<", "DESC"
	}
	bound := int64(0)
	if page.Desc {
		bound = 1 << 62
	}
	if page.After != "" {
		err := s.db.QueryRowContext(ctx, s.q(`SELECT seq FROM conversation_items WHERE conversation_id = ? AND id = ?`),
			id, page.After).Scan(&bound)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, fmt.Errorf("store: conversation item %s: %w", page.After, ErrNotFound)
		}
		if err != nil {
			return nil, false, fmt.Errorf("store: list conversation items: %w", err)
		}
	}
	limit := max(page.Limit, 1)
	items, err := s.queryItems(ctx, `SELECT id, seq, created_at, item FROM conversation_items
		WHERE conversation_id = ? AND seq `+cmp+` ? ORDER BY seq `+order+` LIMIT ?`, id, bound, limit+1)
	if err != nil {
		return nil, false, err
	}
	if len(items) > limit {
		return items[:limit], true, nil
	}
	return items, false, nil
}

// ConversationItems returns all items of the conversation, oldest first: the history a
// response in it continues. Errors: ErrNotFound as GetConversation.
func (s *Store) ConversationItems(ctx context.Context, owner, id string) ([]ConversationItem, error) {
	if _, err := s.GetConversation(ctx, owner, id); err != nil {
		return nil, err
	}
	return s.queryItems(ctx, `SELECT id, seq, created_at, item FROM conversation_items
		WHERE conversation_id = ? ORDER BY seq`, id)
}

// GetConversationItem returns one item. Errors: ErrNotFound when the conversation does not
// exist for owner or has no such item.
func (s *Store) GetConversationItem(ctx context.Context, owner, conv, itemID string) (*ConversationItem, error) {
	items, err := s.queryItems(ctx, `SELECT i.id, i.seq, i.created_at, i.item FROM conversation_items i
		JOIN conversations c ON c.id = i.conversation_id
		WHERE c.id = ? AND c.owner = ? AND i.id = ?`, conv, owner, itemID)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("store: conversation item %s: %w", itemID, ErrNotFound)
	}
	return &items[0], nil
}

// DeleteConversationItem deletes one item. Errors: ErrNotFound as GetConversationItem.
func (s *Store) DeleteConversationItem(ctx context.Context, owner, conv, itemID string) error {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM conversation_items WHERE conversation_id = ? AND id = ?
		AND conversation_id IN (SELECT id FROM conversations WHERE id = ? AND owner = ?)`), conv, itemID, conv, owner)
	if err != nil {
		return fmt.Errorf("store: delete conversation item: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errors.Join(fmt.Errorf("store: conversation item %s: %w", itemID, ErrNotFound), err)
	}
	return nil
}

func (s *Store) queryItems(ctx context.Context, query string, args ...any) ([]ConversationItem, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: query conversation items: %w", err)
	}
	defer rows.Close()
	var out []ConversationItem
	for rows.Next() {
		var (
			it      ConversationItem
			created int64
			item    string
		)
		if err := rows.Scan(&it.ID, &it.Seq, &created, &item); err != nil {
			return nil, fmt.Errorf("store: scan conversation item: %w", err)
		}
		it.CreatedAt, it.Item = time.UnixMilli(created).UTC(), json.RawMessage(item)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: query conversation items: %w", err)
	}
	return out, nil
}

// platformTx runs fn in a transaction, committing when it returns nil.
func (s *Store) platformTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}
