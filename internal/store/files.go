package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// File is the metadata of one uploaded file of the OpenAI Files API (internal/platform).
type File struct {
	// ID is the file id ("file-...").
	ID string
	// Owner scopes the file as ResponseRecord.Owner does.
	Owner string
	// Filename is the name the client uploaded it under.
	Filename string
	// Purpose is the OpenAI purpose ("assistants", "user_data", "batch", ...).
	Purpose string
	// Bytes is the content's size in bytes.
	Bytes int64
	// CreatedAt is the upload time (millisecond precision).
	CreatedAt time.Time
	// ExpiresAt is when the file expires; zero when it does not.
	ExpiresAt time.Time
}

// FilePage selects a page of files, ordered by creation time then id.
type FilePage struct {
	// Purpose keeps only files of this purpose ("" = all).
	Purpose string
	// After is the id of the file the page starts after ("" = from the first in order).
	After string
	// Desc lists newest first.
	Desc bool
	// Limit is the page size (at least 1).
	Limit int
}

const fileColumns = `id, owner, filename, purpose, bytes, created_at, expires_at`

// PutFile stores f with its content; f.Bytes is set from content. Errors: ErrExists when the
// id is taken.
func (s *Store) PutFile(ctx context.Context, f *File, content []byte) error {
	f.Bytes = int64(len(content))
	if content == nil {
		content = []byte{} // an empty file, not NULL
	}
	var expires int64
	if !f.ExpiresAt.IsZero() {
		expires = f.ExpiresAt.UnixMilli()
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO files (`+fileColumns+`, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		f.ID, f.Owner, f.Filename, f.Purpose, f.Bytes, f.CreatedAt.UnixMilli(), expires, content)
	if isUniqueViolation(err) {
		return fmt.Errorf("store: file %s: %w", f.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: put file: %w", err)
	}
	return nil
}

func scanFile(row interface{ Scan(...any) error }) (*File, error) {
	var (
		f                File
		created, expires int64
	)
	if err := row.Scan(&f.ID, &f.Owner, &f.Filename, &f.Purpose, &f.Bytes, &created, &expires); err != nil {
		return nil, err
	}
	f.CreatedAt = time.UnixMilli(created).UTC()
	if expires != 0 {
		f.ExpiresAt = time.UnixMilli(expires).UTC()
	}
	return &f, nil
}

// GetFile returns the metadata of file id owned by owner. Errors: ErrNotFound if it does not
// exist or belongs to another owner (indistinguishable by design).
func (s *Store) GetFile(ctx context.Context, owner, id string) (*File, error) {
	f, err := scanFile(s.db.QueryRowContext(ctx, s.q(`SELECT `+fileColumns+` FROM files WHERE id = ? AND owner = ?`), id, owner))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: file %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get file: %w", err)
	}
	return f, nil
}

// FileContent returns the content of file id owned by owner. Errors: ErrNotFound as GetFile.
func (s *Store) FileContent(ctx context.Context, owner, id string) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, s.q(`SELECT content FROM files WHERE id = ? AND owner = ?`), id, owner).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: file %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: file content: %w", err)
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// ListFiles returns a page of owner's files and whether more follow. Errors: ErrNotFound when
// page.After names no file of owner.
func (s *Store) ListFiles(ctx context.Context, owner string, page FilePage) ([]File, bool, error) {
	cmp, order := ">", "ASC"
	if page.Desc {
		cmp, order = "<", "DESC"
	}
	where, args := `owner = ?`, []any{owner}
	if page.Purpose != "" {
		where += ` AND purpose = ?`
		args = append(args, page.Purpose)
	}
	if page.After != "" {
		after, err := s.GetFile(ctx, owner, page.After)
		if err != nil {
			return nil, false, err
		}
		// (created_at, id) is the order; written out, as SQLite and PostgreSQL both take it.
		where += ` AND (created_at ` + cmp + ` ? OR (created_at = ? AND id ` + cmp + ` ?))`
		ms := after.CreatedAt.UnixMilli()
		args = append(args, ms, ms, after.ID)
	}
	limit := max(page.Limit, 1)
	args = append(args, limit+1)
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+fileColumns+` FROM files WHERE `+where+
		` ORDER BY created_at `+order+`, id `+order+` LIMIT ?`), args...)
	if err != nil {
		return nil, false, fmt.Errorf("store: list files: %w", err)
	}
	defer rows.Close()
	var out []File
	for rows.Next() {
		f, err := scanFile(rows)
		if err != nil {
			return nil, false, fmt.Errorf("store: list files: %w", err)
		}
		out = append(out, *f)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("store: list files: %w", err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// DeleteFile deletes file id owned by owner. Errors: ErrNotFound as GetFile.
func (s *Store) DeleteFile(ctx context.Context, owner, id string) error {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM files WHERE id = ? AND owner = ?`), id, owner)
	if err != nil {
		return fmt.Errorf("store: delete file: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errors.Join(fmt.Errorf("store: file %s: %w", id, ErrNotFound), err)
	}
	return nil
}
